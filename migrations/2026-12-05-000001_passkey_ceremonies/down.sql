-- Ceremonies under way are lost; a browser in the middle of one starts it again.
DROP TABLE passkey_ceremonies;

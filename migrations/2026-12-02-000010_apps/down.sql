ALTER TABLE sign_in_requests DROP COLUMN return_url;
DROP TABLE session_apps;
DROP TABLE app_members;
DROP TABLE apps;

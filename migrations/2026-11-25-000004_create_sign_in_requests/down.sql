DROP TABLE member_browsers;
DROP TABLE sign_in_requests;

DROP FUNCTION login_audit_row_hash(BYTEA, login_audit);
DROP TABLE login_audit;
DROP TABLE login_audit_chain;
DROP FUNCTION login_audit_chain_insert();
DROP FUNCTION login_audit_refuse_change();
DROP FUNCTION login_audit_field(TEXT);

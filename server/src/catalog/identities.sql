-- Schema version 3: who may connect. Passwords are stored as argon2id hashes
-- and tokens as SHA-256 hashes, never in clear. A token of a dropped user is
-- revoked with it.
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    password_changed_at TEXT NOT NULL
);
CREATE TABLE roles (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE role_members (
    role TEXT NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    member TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    granted_at TEXT NOT NULL,
    PRIMARY KEY (role, member)
);
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    user_name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
);
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;
INSERT INTO roles (name, created_at) VALUES ('admin', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

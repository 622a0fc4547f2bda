//! Files and directories that other local users must not read (keys, mails with links, the
//! private cluster). Secret values in memory are `secrecy`'s `SecretString`/`SecretSlice`.

/// Creates `path` (never overwriting) readable by its owner only, writes `bytes` and flushes
/// them to disk: for what must not be read by other local users (keys, mails with links).
pub fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Creates `path` and any missing parents with mode 0700, and makes `path` itself 0700 if it
/// already existed: the directory that holds keys, mail and the private cluster.
pub fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

//! Users and groups by name (`script_user`), through the reentrant
//! `getpwnam_r`/`getgrnam_r` that nix wraps: the daemon runs these on more
//! than one thread, where `getpwnam`'s static buffer is not safe.

/// The uid and primary gid of `name`, if such a user exists. A look-up that
/// fails (an unreadable NSS source) counts as no such user.
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let user = nix::unistd::User::from_name(name).ok()??;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

/// The gid of group `name`, if it exists.
pub fn lookup_group(name: &str) -> Option<u32> {
    let group = nix::unistd::Group::from_name(name).ok()??;
    Some(group.gid.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_uid_0_and_unknown_names_are_none() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_group("root"), Some(0));
        assert_eq!(lookup_user("lbha-no-such-user"), None);
        assert_eq!(lookup_group("lbha-no-such-group"), None);
        assert_eq!(lookup_user("nul\0inside"), None);
    }
}

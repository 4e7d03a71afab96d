//! Who may supply plugin code. A plugin runs as the service, so the folder and every library in
//! it must be writable by the service's owner alone (OpenSSH's `StrictModes` rule; on Windows,
//! by ACL: `acl.rs`), and, when `settings.trusted_plugins` pins them, match a known sha256.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::path::Path;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

/// The checks a library must pass before it is loaded (`settings.strict_plugin_permissions`
/// and `settings.trusted_plugins`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct LoaderPolicy {
    /// Refuse files and folders writable by group or others, or owned by another user (on
    /// Windows: that anyone but the administrators, SYSTEM and the host's user may write to,
    /// or that another account owns).
    #[serde(rename = "strict_plugin_permissions")]
    pub strict_permissions: bool,
    /// Library file name or class name → lowercase hex sha256. Empty: no pinning.
    #[serde(rename = "trusted_plugins")]
    pub pins: BTreeMap<String, Sha256Hex>,
}

/// A sha256 as lowercase hex, as `sha256sum` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    /// The 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hash = String::deserialize(d)?.trim().to_ascii_lowercase();
        if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(hash))
        } else {
            Err(D::Error::custom(
                "must be a sha256 in hex (64 characters, as `sha256sum` prints it)",
            ))
        }
    }
}

/// The sha256 of a library's bytes, as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks the owner and mode of the plugins folder or of one library (`what` says which).
pub fn check_permissions(
    policy: &LoaderPolicy,
    what: &str,
    path: &Path,
    meta: &Metadata,
) -> Result<(), String> {
    check_owner_and_mode(
        policy,
        what,
        path,
        meta,
        "they could run code as this service",
        "root",
    )
}

/// Checks the owner and mode of `state_dir` or of a spool file in it (`what` says which): what
/// it holds is delivered with the token.
pub fn check_record_permissions(
    policy: &LoaderPolicy,
    what: &str,
    path: &Path,
    meta: &Metadata,
) -> Result<(), String> {
    #[cfg(unix)]
    let owner = nix::unistd::geteuid().as_raw().to_string();
    #[cfg(windows)]
    let owner = String::new();
    check_owner_and_mode(
        policy,
        what,
        path,
        meta,
        "they could forge or remove the records delivered with this service's token",
        &owner,
    )
}

/// Refuses `path` if it is writable by group or others (`risk` says what they could do then),
/// or owned by neither root nor this process's user (the fix gives it to `owner`).
fn check_owner_and_mode(
    policy: &LoaderPolicy,
    what: &str,
    path: &Path,
    meta: &Metadata,
    risk: &str,
    owner: &str,
) -> Result<(), String> {
    if !policy.strict_permissions {
        return Ok(());
    }
    let shown = path.display();
    let off = "settings.strict_plugin_permissions: false turns this check off, for development \
               only";
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let writable = match meta.mode() & 0o022 {
            0 => None,
            0o020 => Some("its group"),
            0o002 => Some("others"),
            _ => Some("its group and others"),
        };
        if let Some(who) = writable {
            return Err(format!(
                "{what} {shown} is writable by {who} (mode {:o}), so {risk}; fix it with \
                 `chmod go-w {shown}` ({off})",
                meta.mode() & 0o7777
            ));
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != 0 && meta.uid() != me {
            return Err(format!(
                "{what} {shown} is owned by uid {}, neither root nor this service's user (uid \
                 {me}), so {risk}; fix it with `chown {owner} {shown}` ({off})",
                meta.uid()
            ));
        }
    }
    #[cfg(windows)]
    {
        let _ = (meta, owner);
        let found = super::acl::untrusted(path)
            .map_err(|e| format!("{what} {shown}: cannot read who may write to it ({e})"))?;
        if !found.writers.is_empty() {
            let who: Vec<String> = found
                .writers
                .iter()
                .map(|w| {
                    w.as_ref()
                        .map_or("anyone (it has no access list)".into(), ToString::to_string)
                })
                .collect();
            let sids: Vec<String> = found
                .writers
                .iter()
                .flatten()
                .map(|a| format!("*{}", a.sid))
                .collect();
            let fix = if sids.is_empty() {
                format!("icacls \"{shown}\" /reset")
            } else {
                format!(
                    "icacls \"{shown}\" /inheritance:d /remove:g {}",
                    sids.join(" ")
                )
            };
            return Err(format!(
                "{what} {shown} may be written to by {}, not only by administrators, SYSTEM and \
                 this service's user, so {risk}; fix it with `{fix}` ({off})",
                who.join(", ")
            ));
        }
        if let Some(owner) = found.owner {
            return Err(format!(
                "{what} {shown} is owned by {owner}, neither the administrators, SYSTEM nor \
                 this service's user, so {risk}; fix it with `icacls \"{shown}\" /setowner \
                 *S-1-5-32-544` ({off})"
            ));
        }
    }
    Ok(())
}

/// How a library's pin matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// No pins are configured.
    Unpinned,
    /// Its file name is pinned to its hash.
    File,
    /// These class names are pinned to its hash; it must export one of them.
    Classes(Vec<String>),
}

/// Checks a library's hash against the pins before it is loaded: a file-name pin must match;
/// without one, some class must be pinned to this hash (checked by [`check_classes`] once its
/// classes are known).
pub fn check_pin(policy: &LoaderPolicy, file_name: &str, sha256: &str) -> Result<Pin, String> {
    if policy.pins.is_empty() {
        return Ok(Pin::Unpinned);
    }
    let fix = format!(
        "if this file is trusted, pin it in settings.trusted_plugins: `{file_name}: {sha256}`"
    );
    if let Some(pinned) = policy.pins.get(file_name) {
        let pinned = pinned.as_str();
        return if pinned.eq_ignore_ascii_case(sha256) {
            Ok(Pin::File)
        } else {
            Err(format!(
                "its sha256 {sha256} does not match settings.trusted_plugins.{file_name} ({pinned}); {fix}"
            ))
        };
    }
    let classes: Vec<String> = policy
        .pins
        .iter()
        .filter(|(_, pinned)| pinned.as_str().eq_ignore_ascii_case(sha256))
        .map(|(key, _)| key.clone())
        .collect();
    if classes.is_empty() {
        Err(format!(
            "settings.trusted_plugins pins neither its file name nor its sha256 {sha256}; {fix}"
        ))
    } else {
        Ok(Pin::Classes(classes))
    }
}

/// Completes a class pin: the library must export a class pinned to its hash.
pub fn check_classes<'a>(
    pin: &Pin,
    mut exported: impl Iterator<Item = &'a str>,
) -> Result<(), String> {
    match pin {
        Pin::Classes(pinned) if !exported.any(|c| pinned.iter().any(|p| p == c)) => Err(format!(
            "its sha256 is pinned in settings.trusted_plugins for class {}, which it does not export",
            pinned.join(", ")
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(pins: &[(&str, &str)]) -> LoaderPolicy {
        LoaderPolicy {
            strict_permissions: true,
            pins: pins
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Sha256Hex(v.to_ascii_lowercase())))
                .collect(),
        }
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn file_pins_must_match_and_class_pins_need_the_class() {
        let policy = pinned(&[("liba.so", "AA11"), ("Echo", "bb22")]);
        assert_eq!(check_pin(&policy, "liba.so", "aa11"), Ok(Pin::File));
        let wrong = check_pin(&policy, "liba.so", "bb22").unwrap_err();
        assert!(
            wrong.contains("does not match settings.trusted_plugins.liba.so"),
            "{wrong}"
        );
        let by_class = check_pin(&policy, "libb.so", "bb22").unwrap();
        assert_eq!(by_class, Pin::Classes(vec!["Echo".into()]));
        assert!(check_classes(&by_class, ["Flaky", "Echo"].into_iter()).is_ok());
        assert!(check_classes(&by_class, ["Flaky"].into_iter()).is_err());
        let unknown = check_pin(&policy, "libc.so", "cc33").unwrap_err();
        assert!(unknown.contains("`libc.so: cc33`"), "{unknown}");
        assert_eq!(
            check_pin(&LoaderPolicy::default(), "x.so", "00"),
            Ok(Pin::Unpinned)
        );
    }
}

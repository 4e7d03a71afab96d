//! Where and how a key is written in a YAML text, found by walking the YAML itself down the
//! key's path (mapping keys from the top): in block or flow style, quoted or not, through
//! aliases, and never mistaking a comment or a same-named key elsewhere for it.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The line (from 1) on which the key at `path` (e.g. `["settings", "token"]`) is written,
/// whatever its value; `None` if there is no such key.
pub(super) fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    walk(text, path, Stop::AtKey)?.1
}

/// The scalar at `path` as it is written (a plain `0x1F` is `0x1F`, not 31); `None` if there
/// is no scalar there.
pub(super) fn scalar_of(text: &str, path: &[&str]) -> Option<String> {
    walk(text, path, Stop::AtValue).map(|(scalar, _)| scalar)
}

/// Where the walk stops: a visitor stops it with an error, which carries the position of the
/// key, or of the value, it was given.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    AtKey,
    AtValue,
}

/// What the walk stopped at (the key, or the scalar's text) and its line.
fn walk(text: &str, path: &[&str], stop: Stop) -> Option<(String, Option<usize>)> {
    if path.is_empty() {
        return None;
    }
    let mut found = None;
    let error = Seek {
        path,
        stop,
        found: &mut found,
    }
    .deserialize(yaml_serde::Deserializer::from_str(text))
    .err()?;
    Some((found?, error.location().map(|at| at.line())))
}

/// Walks the mappings down `path`, skipping every other entry.
struct Seek<'a> {
    path: &'a [&'a str],
    stop: Stop,
    found: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.path.is_empty() {
            d.deserialize_str(self)
        } else {
            d.deserialize_map(self)
        }
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a mapping down to the key")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let stop = self.path.len() == 1 && self.stop == Stop::AtKey;
        loop {
            let key = Key {
                wanted: self.path[0],
                stop,
                found: &mut *self.found,
            };
            match map.next_key_seed(key)? {
                None => return Ok(()),
                Some(true) => {
                    return map.next_value_seed(Seek {
                        path: &self.path[1..],
                        stop: self.stop,
                        found: self.found,
                    })
                }
                Some(false) => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
    }

    /// The scalar's text as written: kept, and the walk stopped here.
    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        *self.found = Some(text.to_owned());
        Err(E::custom("found"))
    }
}

/// A mapping key: whether it is the one wanted; if it is and the walk stops at it, kept and
/// the walk stopped there.
struct Key<'a> {
    wanted: &'a str,
    stop: bool,
    found: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        if key != self.wanted {
            return Ok(false);
        }
        if self.stop {
            *self.found = Some(key.to_owned());
            return Err(E::custom("found"));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_found_by_its_path_in_block_and_flow_style_whatever_its_value() {
        let text = "MockCalls:\n  timeout: 1\nsettings:\n  max_timeout: 2\n  # timeout: 3\n  \
                    timeout: 4 # timeout: 5\n  trusted_plugins:\n    liba.so: ab\n  \
                    plugins: [a,\n    b]\nEcho: {timeout: 6}\n";
        let line = |path: &[&str]| line_of(text, path);
        assert_eq!(line(&["settings", "timeout"]), Some(6));
        assert_eq!(line(&["settings", "max_timeout"]), Some(4));
        assert_eq!(line(&["settings", "trusted_plugins"]), Some(7), "a mapping");
        assert_eq!(line(&["settings", "trusted_plugins", "liba.so"]), Some(8));
        assert_eq!(line(&["settings", "plugins"]), Some(9), "a list");
        assert_eq!(line(&["MockCalls", "timeout"]), Some(2));
        assert_eq!(line(&["Echo", "timeout"]), Some(11));
        assert_eq!(line(&["settings", "decay"]), None);
        assert_eq!(line(&[]), None);
        assert_eq!(
            line_of("'settings': {\"decay\": 2}", &["settings", "decay"]),
            Some(1)
        );
    }

    #[test]
    fn a_scalar_is_found_as_written_in_block_and_flow_style() {
        let text = "a: 1\nsettings:\n  x: {token: 0x1F}\n  token: 12.50 # two places\n\
                    flow: {s: {password: '007'}}\n";
        assert_eq!(
            scalar_of(text, &["settings", "token"]).as_deref(),
            Some("12.50")
        );
        assert_eq!(
            scalar_of(text, &["settings", "x", "token"]).as_deref(),
            Some("0x1F")
        );
        assert_eq!(
            scalar_of(text, &["flow", "s", "password"]).as_deref(),
            Some("007")
        );
        assert_eq!(scalar_of(text, &["settings", "missing"]), None);
        assert_eq!(scalar_of(text, &["settings", "x"]), None, "not a scalar");
    }
}

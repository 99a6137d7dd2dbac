//! The one composed key: `.dockerconfigjson` from a registry, a user name
//! and a password, as `kubectl create secret docker-registry` writes it:
//!
//! ```json
//! {"auths":{"<registry>":{"username":"<u>","password":"<p>","auth":"<base64 of u:p>"}}}
//! ```
//!
//! Strings are JSON-escaped by `serde_json`; every buffer that holds a
//! value is zeroized when dropped. Errors name inputs, never values.

use std::io::Write as _;

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::value::SecretValue;

/// Why a `.dockerconfigjson` cannot be composed. Names the input only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    /// The input is not UTF-8 text (JSON holds text).
    #[error("{0} is not UTF-8 text")]
    NotUtf8(Input),
    /// The registry is empty.
    #[error("the registry is empty")]
    EmptyRegistry,
}

/// The inputs of a `.dockerconfigjson`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The registry host.
    Registry,
    /// The user name.
    Username,
    /// The password.
    Password,
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Input::Registry => "the registry",
            Input::Username => "the user name",
            Input::Password => "the password",
        })
    }
}

/// The `.dockerconfigjson` for one registry.
pub fn docker_config_json(
    registry: &SecretValue,
    username: &SecretValue,
    password: &SecretValue,
) -> Result<SecretValue, ComposeError> {
    let registry = text(registry, Input::Registry)?;
    let username = text(username, Input::Username)?;
    let password = text(password, Input::Password)?;
    if registry.trim().is_empty() {
        return Err(ComposeError::EmptyRegistry);
    }
    let mut pair = Zeroizing::new(Vec::with_capacity(username.len() + password.len() + 1));
    pair.extend_from_slice(username.as_bytes());
    pair.push(b':');
    pair.extend_from_slice(password.as_bytes());
    let auth = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*pair));
    // Sized so that it never grows: a reallocation would leave a copy of
    // the values behind, unzeroized (escaping makes a byte at most six).
    let escaped = 6 * (registry.len() + username.len() + password.len());
    let mut json = Zeroizing::new(Vec::with_capacity(64 + escaped + auth.len()));
    // Writing into a Vec cannot fail, and a &str always serializes.
    let mut put = |piece: Piece<'_>| -> Result<(), std::io::Error> {
        match piece {
            Piece::Raw(raw) => json.write_all(raw.as_bytes()),
            Piece::Str(text) => {
                serde_json::to_writer(&mut *json, text).map_err(std::io::Error::from)
            }
        }
    };
    let pieces = [
        Piece::Raw(r#"{"auths":{"#),
        Piece::Str(registry.trim()),
        Piece::Raw(r#":{"username":"#),
        Piece::Str(username),
        Piece::Raw(r#","password":"#),
        Piece::Str(password),
        Piece::Raw(r#","auth":"#),
        Piece::Str(&auth),
        Piece::Raw("}}}"),
    ];
    for piece in pieces {
        // Cannot fail (see above); an error would only leave the JSON
        // short, and the type check refuses JSON that does not parse.
        let _ = put(piece);
    }
    Ok(SecretValue::new(std::mem::take(&mut *json)))
}

/// The value as text, or which input is not.
fn text(value: &SecretValue, input: Input) -> Result<&str, ComposeError> {
    std::str::from_utf8(value.expose()).map_err(|_| ComposeError::NotUtf8(input))
}

/// A piece of the JSON text.
enum Piece<'a> {
    /// Written as it is.
    Raw(&'static str),
    /// Written as a JSON string.
    Str(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> SecretValue {
        SecretValue::from(text.as_bytes())
    }

    #[test]
    fn composes_the_docker_registry_format() {
        let json = docker_config_json(&v("registry.example.com"), &v("robot"), &v("s3cr3t"))
            .expect("composes");
        let parsed: serde_json::Value = serde_json::from_slice(json.expose()).expect("JSON");
        let entry = &parsed["auths"]["registry.example.com"];
        assert_eq!(entry["username"], "robot");
        assert_eq!(entry["password"], "s3cr3t");
        assert_eq!(entry["auth"], "cm9ib3Q6czNjcjN0");
    }

    #[test]
    fn escapes_json_and_encodes_any_text() {
        let password = "p\"a\\s:s\n{}ü";
        let json = docker_config_json(&v(" ghcr.io "), &v("a\"b"), &v(password)).expect("composes");
        let parsed: serde_json::Value = serde_json::from_slice(json.expose()).expect("JSON");
        let entry = &parsed["auths"]["ghcr.io"];
        assert_eq!(entry["username"], "a\"b");
        assert_eq!(entry["password"], password);
        let auth = base64::engine::general_purpose::STANDARD
            .decode(entry["auth"].as_str().expect("a string"))
            .expect("base64");
        assert_eq!(auth, format!("a\"b:{password}").as_bytes());
    }

    #[test]
    fn refuses_binary_inputs_and_an_empty_registry_naming_no_value() {
        let binary = SecretValue::from(&[0xff, 0xfe][..]);
        let error = docker_config_json(&v("r"), &v("u"), &binary).expect_err("binary");
        assert_eq!(error, ComposeError::NotUtf8(Input::Password));
        assert_eq!(error.to_string(), "the password is not UTF-8 text");
        let error = docker_config_json(&v(" "), &v("u"), &v("p")).expect_err("empty");
        assert_eq!(error, ComposeError::EmptyRegistry);
    }
}

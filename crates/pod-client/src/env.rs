//! The checks every edge that takes workload variables applies (the
//! command line's `--env`, the MCP server's `pod_spawn` `env`), kept in one
//! place so both refuse the same things in the same words: a variable name
//! of letters, digits and `_`; none of the variables the runtime sets
//! itself; bounded names, values and counts.

use pod_proto::WireError;
use scope::Echo;

use crate::protocol::Env;

/// Variables the runtime sets itself; giving one is refused.
pub const RESERVED_ENV: [&str; 4] = ["POD_NAME", "POD_SOCKET", "POD_HOME", "POD_PARENT"];
/// Most variables one spawn or start gives.
pub const MAX_VARS: usize = 256;
/// Longest variable name.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest value.
pub const MAX_VALUE_BYTES: usize = 32 << 10;

/// One variable: a well-formed, unreserved name and a bounded value
/// without NUL bytes.
pub fn check_var(key: &str, value: &str) -> Result<(), WireError> {
    let well_formed = !key.is_empty()
        && key.len() <= MAX_NAME_BYTES
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !well_formed {
        return Err(WireError::new(
            "env.bad_name",
            format!("{} is no variable name (letters, digits and _, not starting with a digit, at most {MAX_NAME_BYTES} bytes)", Echo(key)),
        ));
    }
    if RESERVED_ENV.contains(&key) {
        return Err(WireError::new("env.reserved", format!("{key} is set by the runtime itself and cannot be given")));
    }
    if value.len() > MAX_VALUE_BYTES || value.contains('\0') {
        return Err(WireError::new(
            "env.bad_value",
            format!("the value of {key} is longer than {MAX_VALUE_BYTES} bytes or holds a NUL byte"),
        ));
    }
    Ok(())
}

/// A whole set of variables: each checked, at most [`MAX_VARS`] of them.
pub fn check_env(vars: Vec<(String, String)>) -> Result<Env, WireError> {
    if vars.len() > MAX_VARS {
        return Err(WireError::new("env.too_many", format!("{} variables; the limit is {MAX_VARS}", vars.len())));
    }
    for (key, value) in &vars {
        check_var(key, value)?;
    }
    Ok(Env(vars))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(vars: &[(&str, &str)]) -> Option<String> {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        check_env(vars).err().map(|e| e.code)
    }

    #[test]
    fn names_values_and_counts_are_checked() {
        assert_eq!(code(&[("GREETING", "hi"), ("_X1", "")]), None);
        assert_eq!(code(&[("1X", "v")]).as_deref(), Some("env.bad_name"));
        assert_eq!(code(&[("A-B", "v")]).as_deref(), Some("env.bad_name"));
        assert_eq!(code(&[("POD_SOCKET", "v")]).as_deref(), Some("env.reserved"));
        assert_eq!(code(&[("A", "a\0b")]).as_deref(), Some("env.bad_value"));
        let long = "v".repeat(MAX_VALUE_BYTES + 1);
        assert_eq!(code(&[("A", &long)]).as_deref(), Some("env.bad_value"));
        let many: Vec<(String, String)> = (0..=MAX_VARS).map(|i| (format!("V{i}"), String::new())).collect();
        assert_eq!(check_env(many).err().map(|e| e.code).as_deref(), Some("env.too_many"));
    }
}

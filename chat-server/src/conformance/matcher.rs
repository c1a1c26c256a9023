//! Expected frames against actual ones: `"*"`, `"<absent>"`, `"$name"` captures, objects that
//! may carry more keys than expected, arrays element by element.

use std::collections::HashMap;

use serde_json::Value;

/// Values captured by `"$name"` patterns, and substituted into later frames and tokens.
pub type Vars = HashMap<String, Value>;

/// Replaces `"$name"` strings with captured values.
pub fn substitute(v: &mut Value, vars: &Vars) -> Result<(), String> {
    match v {
        Value::String(s) if s.starts_with('$') => {
            *v = vars
                .get(&s[1..])
                .cloned()
                .ok_or_else(|| format!("`{s}` was never captured"))?;
        }
        Value::Array(a) => a.iter_mut().try_for_each(|x| substitute(x, vars))?,
        Value::Object(o) => o.values_mut().try_for_each(|x| substitute(x, vars))?,
        _ => {}
    }
    Ok(())
}

/// Whether `actual` matches `expected`; the error names the first path that differs.
pub fn matches(
    expected: &Value,
    actual: Option<&Value>,
    path: &str,
    vars: &mut Vars,
) -> Result<(), String> {
    if expected == "<absent>" {
        return match actual {
            None => Ok(()),
            Some(a) => Err(format!("{path}: expected absent, got {a}")),
        };
    }
    let Some(actual) = actual else {
        return Err(format!("{path}: missing"));
    };
    match expected {
        Value::String(s) if s == "*" => Ok(()),
        Value::String(s) if s.starts_with('$') => {
            let name = &s[1..];
            match vars.get(name) {
                Some(v) if v == actual => Ok(()),
                Some(v) => Err(format!("{path}: expected ${name} = {v}, got {actual}")),
                None => {
                    vars.insert(name.to_owned(), actual.clone());
                    Ok(())
                }
            }
        }
        Value::Object(exp) => {
            let Value::Object(act) = actual else {
                return Err(format!("{path}: expected an object, got {actual}"));
            };
            for (k, e) in exp {
                matches(e, act.get(k), &format!("{path}.{k}"), vars)?;
            }
            Ok(())
        }
        Value::Array(exp) => {
            let Value::Array(act) = actual else {
                return Err(format!("{path}: expected an array, got {actual}"));
            };
            if exp.len() != act.len() {
                return Err(format!(
                    "{path}: expected {} elements, got {}: {actual}",
                    exp.len(),
                    act.len()
                ));
            }
            for (i, (e, a)) in exp.iter().zip(act).enumerate() {
                matches(e, Some(a), &format!("{path}[{i}]"), vars)?;
            }
            Ok(())
        }
        other if other == actual => Ok(()),
        other => Err(format!("{path}: expected {other}, got {actual}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matcher_can_fail() {
        let mut vars = Vars::new();
        let pat: Value =
            serde_json::json!({"type":"ack","seq":1,"ts":"*","id":"$id","ref":"<absent>"});
        let ok = serde_json::json!({"type":"ack","seq":1,"ts":5,"id":"m1","extra":true});
        assert!(matches(&pat, Some(&ok), "f", &mut vars).is_ok());
        assert_eq!(vars["id"], "m1");
        let wrong_seq = serde_json::json!({"type":"ack","seq":2,"ts":5,"id":"m1"});
        assert!(matches(&pat, Some(&wrong_seq), "f", &mut vars).is_err());
        let other_id = serde_json::json!({"type":"ack","seq":1,"ts":5,"id":"m2"});
        assert!(matches(&pat, Some(&other_id), "f", &mut vars).is_err());
        let with_ref = serde_json::json!({"type":"ack","seq":1,"ts":5,"id":"m1","ref":1});
        assert!(matches(&pat, Some(&with_ref), "f", &mut vars).is_err());
        let missing_ts = serde_json::json!({"type":"ack","seq":1,"id":"m1"});
        assert!(matches(&pat, Some(&missing_ts), "f", &mut vars).is_err());
        let arr: Value = serde_json::json!({"m":[1,2]});
        let longer = serde_json::json!({"m":[1,2,3]});
        assert!(matches(&arr, Some(&longer), "f", &mut vars).is_err());
    }
}

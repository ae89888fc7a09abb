//! Stats structs that carry a description per field, written once: the
//! [`described!`](crate::described) macro turns each into the field's rustdoc
//! and into the struct's entry in the scx_stats metadata (`stats_meta` on the
//! stats socket, and `host --help-stats`).
//!
//! The metadata follows scx_stats' JSON shape: per struct `name`, `desc`,
//! `fields`; per field its data (`{"datum": kind}`, `{"array": kind}` or
//! `{"dict": {"key": kind, "datum": kind}}`, a kind being `u64`, `i64`,
//! `float`, `string` or `{"struct": name}`) and `desc`.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Map, Value};

/// Every struct's metadata, by struct name.
pub type Metas = BTreeMap<String, Value>;

/// A type a stats field may have.
pub trait Field {
    /// The scx_stats kind of one value (`"u64"`, `{"struct": "Name"}`, …).
    fn kind() -> Value;
    /// The field's data: one datum unless overridden (arrays, dicts).
    fn data() -> (&'static str, Value) {
        ("datum", Self::kind())
    }
    /// Adds the metadata of the structs this type contains.
    fn nested(_out: &mut Metas) {}
}

macro_rules! scalar {
    ($kind:literal: $($t:ty),*) => {
        $(impl Field for $t {
            fn kind() -> Value {
                Value::from($kind)
            }
        })*
    };
}
scalar!("u64": u64, u32);
scalar!("i64": i64, i32);
scalar!("float": f64);
scalar!("string": String);

impl<T: Field> Field for Vec<T> {
    fn kind() -> Value {
        T::kind()
    }
    fn data() -> (&'static str, Value) {
        ("array", T::kind())
    }
    fn nested(out: &mut Metas) {
        T::nested(out)
    }
}

impl<T: Field> Field for BTreeMap<String, T> {
    fn kind() -> Value {
        T::kind()
    }
    fn data() -> (&'static str, Value) {
        ("dict", json!({ "key": "string", "datum": T::kind() }))
    }
    fn nested(out: &mut Metas) {
        T::nested(out)
    }
}

/// The metadata of `T` and of every struct it contains, `T` marked as the
/// top-level struct (the one a `stats` request answers with).
pub fn metas<T: Field>(top: &str) -> Metas {
    let mut out = Metas::new();
    T::nested(&mut out);
    if let Some(Value::Object(m)) = out.get_mut(top) {
        m.insert("top".into(), "true".into());
    }
    out
}

/// One struct's metadata (used by the macro).
pub fn meta(name: &str, desc: &str, fields: &[(&str, (&str, Value), &str)]) -> Value {
    let fields: Map<String, Value> = fields
        .iter()
        .map(|(field, (tag, data), desc)| {
            let mut f = Map::new();
            f.insert((*tag).into(), data.clone());
            f.insert("desc".into(), (*desc).into());
            ((*field).into(), Value::Object(f))
        })
        .collect();
    json!({ "name": name, "desc": desc, "fields": fields })
}

/// `--help-stats`: every struct reachable from `top`, its fields with their
/// types and descriptions.
pub fn help(metas: &Metas, top: &str) -> String {
    let mut out = String::new();
    let mut order = vec![top.to_string()];
    let mut i = 0;
    while let Some(name) = order.get(i).cloned() {
        i += 1;
        let Some(m) = metas.get(&name) else { continue };
        let _ = writeln!(
            out,
            "{}{name}: {}",
            if i > 1 { "\n" } else { "" },
            m["desc"].as_str().unwrap_or_default()
        );
        let fields = m["fields"].as_object().cloned().unwrap_or_default();
        let width = fields.keys().map(String::len).max().unwrap_or(0);
        for (field, f) in &fields {
            let (ty, inner) = type_name(f);
            if let Some(inner) = inner.filter(|n| !order.contains(n)) {
                order.push(inner);
            }
            let _ = writeln!(
                out,
                "  {field:width$}  {ty:24}  {}",
                f["desc"].as_str().unwrap_or_default()
            );
        }
    }
    out
}

/// A field's type as text, and the struct it names if any.
fn type_name(f: &Value) -> (String, Option<String>) {
    let kind = |k: &Value| match k {
        Value::String(s) => (s.clone(), None),
        k => {
            let s = k["struct"].as_str().unwrap_or("?").to_string();
            (s.clone(), Some(s))
        }
    };
    if let Some(k) = f.get("datum") {
        kind(k)
    } else if let Some(k) = f.get("array") {
        let (t, s) = kind(k);
        (format!("[{t}]"), s)
    } else if let Some(d) = f.get("dict") {
        let (t, s) = kind(&d["datum"]);
        (format!("{{string: {t}}}"), s)
    } else {
        ("?".into(), None)
    }
}

/// Declares a stats struct, each field with its description:
/// `described! { #[derive(..)] pub struct Name: "what it is" { field: Type => "what it counts", } }`.
macro_rules! described {
    (
        $(#[$attr:meta])*
        pub struct $name:ident: $desc:literal {
            $( $(#[$fattr:meta])* $field:ident: $ty:ty => $fdesc:literal, )*
        }
    ) => {
        #[doc = $desc]
        $(#[$attr])*
        pub struct $name {
            $( #[doc = $fdesc] $(#[$fattr])* pub $field: $ty, )*
        }
        impl $crate::described::Field for $name {
            fn kind() -> serde_json::Value {
                serde_json::json!({ "struct": stringify!($name) })
            }
            fn nested(out: &mut $crate::described::Metas) {
                if out.contains_key(stringify!($name)) {
                    return;
                }
                out.insert(
                    stringify!($name).into(),
                    $crate::described::meta(stringify!($name), $desc, &[
                        $( (stringify!($field), <$ty as $crate::described::Field>::data(), $fdesc), )*
                    ]),
                );
                $( <$ty as $crate::described::Field>::nested(out); )*
            }
        }
    };
}
pub(crate) use described;

#[cfg(test)]
mod tests {
    use super::*;

    described! {
        #[derive(serde::Serialize, Default)]
        pub struct Inner: "an inner struct" {
            n: u64 => "a count",
        }
    }
    described! {
        #[derive(serde::Serialize, Default)]
        pub struct Outer: "the top" {
            name: String => "a name",
            share: f64 => "a share",
            inner: Inner => "one inner",
            many: Vec<Inner> => "inners",
            counters: BTreeMap<String, u64> => "named counters",
        }
    }

    #[test]
    fn metadata_has_scx_stats_shape_and_covers_nested_structs() {
        let m = metas::<Outer>("Outer");
        assert_eq!(m["Outer"]["top"], "true");
        assert_eq!(
            m["Outer"]["fields"]["share"],
            json!({"datum": "float", "desc": "a share"})
        );
        assert_eq!(
            m["Outer"]["fields"]["many"]["array"],
            json!({"struct": "Inner"})
        );
        assert_eq!(
            m["Outer"]["fields"]["counters"]["dict"],
            json!({"key": "string", "datum": "u64"})
        );
        assert_eq!(m["Inner"]["fields"]["n"]["datum"], "u64");
        assert!(m["Inner"].get("top").is_none());
        let text = help(&m, "Outer");
        assert!(text.starts_with("Outer: the top\n"), "{text}");
        assert!(
            text.contains("\nInner: an inner struct\n  n  u64"),
            "{text}"
        );
        assert!(text.contains("[Inner]"), "{text}");
    }
}

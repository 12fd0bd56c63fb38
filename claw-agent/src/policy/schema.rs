//! JSON Schemas of the policy file and of claw-agent's configuration file, for editors (the YAML
//! language server validates a file that names one) and `clawctl policy schema`. Derived with
//! schemars from the very types the files are read into, so that the schema and the parser
//! cannot disagree about keys; a value's own form (a path, a destination, a size) is checked by
//! its parser, and the schema says in words what each one takes.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

/// `impl JsonSchema` for a type read from one scalar and checked by its own Deserialize: the
/// schema gives its JSON types and says what it takes.
macro_rules! scalar_schema {
    ($ty:ty, $name:literal, [$($kind:literal),+], $description:literal) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": [$($kind),+],
                    "description": $description,
                })
            }
        }
    };
}
pub(crate) use scalar_schema;

/// The policy file's schema (`clawctl policy schema`).
pub fn policy() -> serde_json::Value {
    let mut schema = serde_json::to_value(super::document::schema()).expect("a schema is JSON");
    schema["title"] = "claw policy".into();
    schema
}

/// An array of `T` (a list type whose Deserialize checks more, such as unique names).
pub(crate) fn array_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let items = generator.subschema_for::<T>();
    json_schema!({ "type": "array", "items": items })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_schema_names_every_agent_key() {
        let schema = policy();
        let text = schema.to_string();
        for key in [
            "files",
            "exec",
            "libraries",
            "connect",
            "listen",
            "redirect",
            "run",
            "limits",
            "devices",
            "allow_env",
            "jit",
            "mode",
            "include",
            "common",
        ] {
            assert!(text.contains(&format!("\"{key}\"")), "no {key} in {text}");
        }
        // Unknown keys are errors in the file, so in the schema too.
        assert!(text.contains("\"additionalProperties\":false"), "{text}");
    }
}

//! Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template` or
//! `tokenizer_config.json`'s `chat_template`) rendered with minijinja plus the Python-compat
//! methods (`.strip()`, `.startswith()`, ...) that Hugging Face templates use.
//!
//! The template is compiled once at load; rendering is a pure function of the messages (and,
//! for tool calling, of the `tools` list).
//!
//! Python parity where templates print JSON: `tojson` behaves as in transformers'
//! `apply_chat_template` (`json.dumps` with `", "` / `": "` separators, keys in the order
//! given, non-ASCII and `<>&'` written as they are), not as Jinja's or minijinja's own filter
//! (sorted keys / compact / HTML-escaped). Keeping keys in order needs the input to be parsed
//! into a [`TemplateValue`] (minijinja keeps insertion order), not a `serde_json::Value`
//! (which sorts keys): [`template_value`] does that from JSON text.

use minijinja::value::Kwargs;
use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;

/// A template input (message list, tool list) with its object keys in the order written.
pub use minijinja::Value as TemplateValue;

use super::ModelError;

/// A message as the template sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// ChatML, used when a model ships no template.
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

fn raise_exception(msg: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// `json.dumps` separators without indentation: `, ` between items, `: ` after keys.
struct PySeparators;

impl serde_json::ser::Formatter for PySeparators {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// transformers' `tojson(x, indent=None)`: Python `json.dumps(x, ensure_ascii=False)`. With
/// `indent`, items go one per line (`,` then newline, `: ` after keys), as Python does.
fn tojson(value: &TemplateValue, kwargs: Kwargs) -> Result<TemplateValue, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let r = match indent {
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PySeparators,
        )),
        Some(n) => {
            let pad = " ".repeat(n);
            let f = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
            value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, f))
        }
    };
    r.map_err(|e| {
        Error::new(ErrorKind::InvalidOperation, "cannot serialize to JSON").with_source(e)
    })?;
    let s = String::from_utf8(out)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(TemplateValue::from_safe_string(s))
}

/// Parses JSON text (a message list, a `tools` list) into a template input, keeping every
/// object's keys in the order written.
pub fn template_value(json: &str) -> Result<TemplateValue, ModelError> {
    serde_json::from_str(json).map_err(|e| ModelError::Template(format!("invalid JSON: {e}")))
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ModelError> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.set_trim_blocks(false);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| {
                ModelError::Template(format!("cannot compile the model's template: {e}"))
            })?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// The template's Jinja source (reasoning-marker detection reads it).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; with `add_generation_prompt` the assistant turn is opened.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        self.render_with(
            &TemplateValue::from_serialize(messages),
            None,
            add_generation_prompt,
        )
    }

    /// Renders OpenAI-style messages (a list of objects: `role`, `content` (text or null),
    /// and where the turn has them `name`, `tool_calls`, `tool_call_id`) with the request's
    /// `tools` (function schemas) when given; templates test `if tools`, so `None` and an
    /// absent list render alike.
    pub fn render_with(
        &self,
        messages: &TemplateValue,
        tools: Option<&TemplateValue>,
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| ModelError::Template(e.to_string()))?;
        t.render(context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| ModelError::Template(format!("rendering failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback_renders() {
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        let s = t.render(&[ChatMessage::new("user", "hi")], true).unwrap();
        assert_eq!(s, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn raise_exception_is_an_error_and_pycompat_methods_work() {
        let src = "{% if messages[0]['role'] == 'bad' %}{{ raise_exception('roles must alternate') }}{% endif %}{{ messages[0]['content'].strip() }}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "  x ")], false)
                .unwrap(),
            "x"
        );
        let e = t
            .render(&[ChatMessage::new("bad", "x")], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("roles must alternate"), "{e}");
    }

    #[test]
    fn tojson_is_python_json_dumps_with_keys_in_order() {
        let t = ChatTemplate::new(
            "{% for x in tools %}{{ x | tojson }}|{{ x | tojson(indent=2) }}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        // Python: json.dumps(x, ensure_ascii=False) and json.dumps(x, ensure_ascii=False,
        // indent=2) of this list's one element.
        let tools =
            template_value(r#"[{"z": 1, "a": [true, null, 2.5, "é<&>'\n"], "m": {}}]"#).unwrap();
        let msgs = template_value("[]").unwrap();
        assert_eq!(
            t.render_with(&msgs, Some(&tools), false).unwrap(),
            "{\"z\": 1, \"a\": [true, null, 2.5, \"é<&>'\\n\"], \"m\": {}}|{\n  \"z\": 1,\n  \"a\": [\n    true,\n    null,\n    2.5,\n    \"é<&>'\\n\"\n  ],\n  \"m\": {}\n}"
        );
    }
}

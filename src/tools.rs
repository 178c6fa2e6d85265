//! Tool calling: the request's `tools` / `tool_choice`, how they reach the prompt, the grammar
//! that enforces `required` and named choices, and the parsers that turn output text into
//! OpenAI `tool_calls` (whole, or held back and emitted at the end of a stream).
//!
//! ```text
//! formats (--tool-call-parser):
//!   hermes       <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>   (Qwen, Hermes,
//!                the fallback prompt below); text before the first call is `content`
//!   llama3_json  {"name": "f", "parameters": {...}} as the whole output (`<|python_tag|>`
//!                first allowed; several calls separated by `;`)
//! prompt: the model's chat template with `tools` and the messages' `tool_calls` /
//!   `tool_call_id`; a template that never reads `tools` gets them in a Hermes-style system
//!   prompt, assistant calls as <tool_call> blocks and results as <tool_response> user turns
//! tool_choice: none -> tools left out of the prompt, output not parsed
//!   auto -> parsed; required / {"type":"function","function":{"name"}} -> grammar-enforced
//! ```

use serde_json::{json, Map, Value};

use crate::guided::Constraint;
use crate::model::template::{ChatTemplate, TemplateValue};

/// `--tool-call-parser`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ToolParser {
    Hermes,
    #[value(name = "llama3_json")]
    Llama3Json,
    None,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

/// A request's tools, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    /// The `tools` array as sent (function tools only).
    pub list: Value,
    /// (name, parameters schema) per tool.
    pub functions: Vec<(String, Value)>,
    pub choice: ToolChoice,
    pub parallel: bool,
}

/// A `tools` / `tool_choice` / `parallel_tool_calls` field the request got wrong; the
/// validator turns it into a 400 naming `param`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    pub param: String,
    pub message: String,
}

fn bad(param: &str, message: String) -> ToolError {
    ToolError {
        param: param.to_string(),
        message,
    }
}

/// Reads `tools`, `tool_choice`, `parallel_tool_calls` of a chat body.
pub fn parse(obj: &Map<String, Value>) -> Result<Option<Tools>, ToolError> {
    let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let list = match get("tools") {
        None => None,
        Some(Value::Array(a)) => Some(a),
        Some(v) => return Err(bad("tools", format!("`tools` must be an array, given {v}"))),
    };
    let choice = match get("tool_choice") {
        None => None,
        Some(Value::String(s)) if s == "none" => Some(ToolChoice::None),
        Some(Value::String(s)) if s == "auto" => Some(ToolChoice::Auto),
        Some(Value::String(s)) if s == "required" => Some(ToolChoice::Required),
        Some(v @ Value::Object(o)) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| o.get("type").and_then(Value::as_str) == Some("function"));
            match name {
                Some(n) => Some(ToolChoice::Named(n.to_string())),
                None => {
                    return Err(bad(
                        "tool_choice",
                        format!("`tool_choice` must be none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, given {v}"),
                    ))
                }
            }
        }
        Some(v) => {
            return Err(bad(
                "tool_choice",
                format!("`tool_choice` must be none, auto, required or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, given {v}"),
            ))
        }
    };
    let parallel = match get("parallel_tool_calls") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(bad(
                "parallel_tool_calls",
                format!("`parallel_tool_calls` must be a boolean, given {v}"),
            ))
        }
    };
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return match choice {
            None | Some(ToolChoice::None) => Ok(None),
            Some(_) => Err(bad(
                "tool_choice",
                "`tool_choice` needs a non-empty `tools` list".into(),
            )),
        };
    };
    let mut functions = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let p = format!("tools[{i}]");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(
                &format!("{p}.type"),
                format!("`{p}.type` must be \"function\" (custom tools are not supported)"),
            ));
        }
        let f = t
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                bad(
                    &format!("{p}.function"),
                    format!("`{p}.function` must be an object"),
                )
            })?;
        let name = f.get("name").and_then(Value::as_str).unwrap_or("");
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(bad(
                &format!("{p}.function.name"),
                format!(
                    "`{p}.function.name` must be 1 to 64 of a-z, A-Z, 0-9, _ and -, given {name:?}"
                ),
            ));
        }
        if functions.iter().any(|(n, _)| n == name) {
            return Err(bad(
                &format!("{p}.function.name"),
                format!("tool name {name:?} is given twice"),
            ));
        }
        let params = f
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        functions.push((name.to_string(), params));
    }
    let choice = choice.unwrap_or(ToolChoice::Auto);
    if let ToolChoice::Named(n) = &choice {
        if !functions.iter().any(|(f, _)| f == n) {
            return Err(bad(
                "tool_choice",
                format!("`tool_choice` names {n:?}, which is not in `tools`"),
            ));
        }
    }
    Ok(Some(Tools {
        list: Value::Array(list.clone()),
        functions,
        choice,
        parallel,
    }))
}

/// The Lark grammar forcing at least one call (`required`) or a call of the named tool, in
/// the parser's format; `None` when nothing is forced.
pub fn forced_grammar(t: &Tools, parser: ToolParser) -> Option<Constraint> {
    let names: Vec<&(String, Value)> = match &t.choice {
        ToolChoice::Required => t.functions.iter().collect(),
        ToolChoice::Named(n) => t.functions.iter().filter(|(f, _)| f == n).collect(),
        ToolChoice::None | ToolChoice::Auto => return None,
    };
    let lit = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let (open, key, close) = match parser {
        ToolParser::Llama3Json => ("{\"name\": ", "\"parameters\"", "}"),
        ToolParser::Hermes | ToolParser::None => (
            "<tool_call>\n{\"name\": ",
            "\"arguments\"",
            "}\n</tool_call>",
        ),
    };
    let mut g = String::new();
    let sep = if parser == ToolParser::Llama3Json {
        "; "
    } else {
        "\n"
    };
    if t.parallel {
        g.push_str(&format!("start: call ({} call)*\n", lit(sep)));
    } else {
        g.push_str("start: call\n");
    }
    let alts: Vec<String> = (0..names.len()).map(|i| format!("call{i}")).collect();
    g.push_str(&format!("call: {}\n", alts.join(" | ")));
    for (i, (name, params)) in names.iter().enumerate() {
        let head = format!("{open}{}, {key}: ", lit(name));
        g.push_str(&format!("call{i}: {} args{i} {}\n", lit(&head), lit(close)));
        g.push_str(&format!("args{i}: %json {params}\n"));
    }
    Some(Constraint::Grammar(g))
}

/// The system text that presents `tools` to a model whose template ignores them.
pub fn fallback_system_prompt(t: &Tools) -> String {
    let mut s = String::from(
        "You may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n",
    );
    if let Some(a) = t.list.as_array() {
        for tool in a {
            s.push_str(&tool.to_string());
            s.push('\n');
        }
    }
    s.push_str(
        "</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

/// Renders chat `messages` (OpenAI-shaped JSON: `tool_calls`, `tool_call_id`) with `tools`
/// (left out when `tool_choice` is none): through the template when it reads `tools`, else
/// through the Hermes-style fallback (see the module diagram).
pub fn render(
    template: &ChatTemplate,
    messages: &[Value],
    tools: Option<&Tools>,
) -> Result<String, String> {
    let tools = tools.filter(|t| t.choice != ToolChoice::None);
    let native = template.source().contains("tools");
    let msgs: Vec<Value> = if native {
        messages.to_vec()
    } else {
        fallback_messages(messages, tools)
    };
    let value = |v: &Value| -> Result<TemplateValue, String> {
        crate::model::template::template_value(&v.to_string()).map_err(|e| e.to_string())
    };
    let list = match tools {
        Some(t) if native => Some(value(&t.list)?),
        _ => None,
    };
    template
        .render_with(&value(&Value::Array(msgs))?, list.as_ref(), true)
        .map_err(|e| e.to_string())
}

/// Messages for a template that knows no tools: a system prompt listing them, calls and
/// results as text.
fn fallback_messages(messages: &[Value], tools: Option<&Tools>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(messages.len() + 1);
    if let Some(t) = tools {
        let sys = fallback_system_prompt(t);
        match messages.first() {
            Some(m) if m["role"] == "system" => {
                let text = format!("{}\n\n{sys}", m["content"].as_str().unwrap_or(""));
                out.push(json!({"role": "system", "content": text}));
            }
            _ => out.push(json!({"role": "system", "content": sys})),
        }
    }
    let skip =
        usize::from(tools.is_some() && messages.first().is_some_and(|m| m["role"] == "system"));
    for m in &messages[skip..] {
        let role = m["role"].as_str().unwrap_or("user");
        let mut content = m["content"].as_str().unwrap_or("").to_string();
        match role {
            "assistant" => {
                for c in m["tool_calls"].as_array().into_iter().flatten() {
                    let f = &c["function"];
                    let call = json!({"name": f["name"], "arguments": f["arguments"]});
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(&format!("<tool_call>\n{call}\n</tool_call>"));
                }
                out.push(json!({"role": "assistant", "content": content}));
            }
            "tool" => out.push(json!({"role": "user",
                "content": format!("<tool_response>\n{content}\n</tool_response>")})),
            _ => out.push(json!({"role": role, "content": content})),
        }
    }
    out
}

/// A parsed call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// Splits output `text` into (content before the calls, calls); `None` when it holds no
/// well-formed call (then it is plain content).
pub fn parse_calls(text: &str, parser: ToolParser) -> Option<(String, Vec<Call>)> {
    let call = |v: &Value, key: &str| -> Option<Call> {
        let name = v.get("name")?.as_str()?.to_string();
        let args = v
            .get(key)
            .or_else(|| v.get("arguments"))
            .cloned()
            .unwrap_or(json!({}));
        Some(Call {
            name,
            arguments: args.to_string(),
        })
    };
    match parser {
        ToolParser::None => None,
        ToolParser::Hermes => {
            let start = text.find("<tool_call>")?;
            let mut calls = Vec::new();
            let mut rest = &text[start..];
            while let Some(i) = rest.find("<tool_call>") {
                let body = &rest[i + "<tool_call>".len()..];
                let (json, next) = match body.find("</tool_call>") {
                    Some(e) => (&body[..e], &body[e + "</tool_call>".len()..]),
                    None => (body, ""),
                };
                let v: Value = serde_json::from_str(json.trim()).ok()?;
                calls.push(call(&v, "arguments")?);
                rest = next;
            }
            Some((text[..start].trim_end().to_string(), calls))
        }
        ToolParser::Llama3Json => {
            let t = text.trim_start();
            let t = t.strip_prefix("<|python_tag|>").unwrap_or(t).trim();
            if !t.starts_with('{') {
                return None;
            }
            let mut calls = Vec::new();
            for part in t.split("; ") {
                let v: Value = serde_json::from_str(part.trim()).ok()?;
                calls.push(call(&v, "parameters")?);
            }
            Some((String::new(), calls))
        }
    }
}

/// The OpenAI `tool_calls` array (ids `call_` + 24 hex digits).
pub fn calls_json(calls: &[Call], streaming: bool) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let id = format!("call_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]);
            let mut v = json!({"id": id, "type": "function",
                "function": {"name": c.name, "arguments": c.arguments}});
            if streaming {
                v["index"] = json!(i);
            }
            v
        })
        .collect()
}

/// Streaming: shows content until a call may be starting, then holds the rest for
/// `parse_calls` at the end.
#[derive(Debug, Clone)]
pub struct Holdback {
    parser: ToolParser,
    text: String,
    shown: usize,
    holding: bool,
}

impl Holdback {
    pub fn new(parser: ToolParser) -> Self {
        Holdback {
            parser,
            text: String::new(),
            shown: 0,
            holding: false,
        }
    }

    /// Appends `piece`; returns the text that may be shown now.
    pub fn push(&mut self, piece: &str) -> String {
        self.text.push_str(piece);
        if self.holding {
            return String::new();
        }
        let until = match self.parser {
            ToolParser::None => self.text.len(),
            ToolParser::Hermes => match self.text.find("<tool_call>") {
                Some(i) => {
                    self.holding = true;
                    i
                }
                // Keep back a tail that could be the start of "<tool_call>".
                None => {
                    let tag = "<tool_call>";
                    let mut cut = self.text.len();
                    for k in (1..tag.len()).rev() {
                        if self.text.ends_with(&tag[..k]) {
                            cut = self.text.len() - k;
                            break;
                        }
                    }
                    cut
                }
            },
            ToolParser::Llama3Json => {
                let t = self.text.trim_start();
                if t.is_empty() {
                    0
                } else if t.starts_with('{') || "<|python_tag|>".starts_with(&t[..t.len().min(14)])
                {
                    self.holding = true;
                    0
                } else {
                    self.text.len()
                }
            }
        };
        let until = until.max(self.shown);
        let out = self.text[self.shown..until].to_string();
        self.shown = until;
        out
    }

    /// The end: (content not yet shown, calls) — calls empty when the held text was none.
    pub fn finish(&mut self) -> (String, Vec<Call>) {
        match parse_calls(&self.text, self.parser) {
            Some((content, calls)) => {
                let rest = content.get(self.shown.min(content.len())..).unwrap_or("");
                (rest.to_string(), calls)
            }
            None => (self.text[self.shown..].to_string(), Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hermes_and_llama3_outputs_parse() {
        let text = "Let me check.\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"UTC\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>";
        let (content, calls) = parse_calls(text, ToolParser::Hermes).unwrap();
        assert_eq!(content, "Let me check.");
        assert_eq!(
            calls,
            [
                Call {
                    name: "get_time".into(),
                    arguments: "{\"tz\":\"UTC\"}".into()
                },
                Call {
                    name: "f".into(),
                    arguments: "{}".into()
                }
            ]
        );
        assert_eq!(parse_calls("plain answer", ToolParser::Hermes), None);
        assert_eq!(parse_calls("<tool_call>{bad", ToolParser::Hermes), None);
        let (_, calls) = parse_calls(
            "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"x\": 1}}",
            ToolParser::Llama3Json,
        )
        .unwrap();
        assert_eq!(calls[0].arguments, "{\"x\":1}");
    }

    #[test]
    fn holdback_streams_content_and_keeps_calls() {
        let mut h = Holdback::new(ToolParser::Hermes);
        assert_eq!(h.push("Sure"), "Sure");
        assert_eq!(h.push(" <tool"), " ");
        assert_eq!(h.push("_call>\n{\"name\": \"f\", \"arguments\": {}}"), "");
        assert_eq!(h.push("\n</tool_call>"), "");
        let (rest, calls) = h.finish();
        assert_eq!((rest.as_str(), calls.len()), ("", 1));
        let mut h = Holdback::new(ToolParser::Hermes);
        assert_eq!(h.push("a <to"), "a ");
        assert_eq!(h.push("p>"), "<top>");
        assert_eq!(h.finish(), (String::new(), vec![]));
    }

    #[test]
    fn required_grammar_lists_every_tool() {
        let body = json!({"tools": [{"type": "function", "function": {"name": "a"}},
            {"type": "function", "function": {"name": "b", "parameters": {"type": "object"}}}],
            "tool_choice": "required", "parallel_tool_calls": false});
        let t = parse(body.as_object().unwrap()).unwrap().unwrap();
        let Some(Constraint::Grammar(g)) = forced_grammar(&t, ToolParser::Hermes) else {
            panic!()
        };
        assert_eq!(
            g,
            "start: call\ncall: call0 | call1\n\
             call0: \"<tool_call>\\n{\\\"name\\\": \\\"a\\\", \\\"arguments\\\": \" args0 \"}\\n</tool_call>\"\n\
             args0: %json {\"type\":\"object\",\"properties\":{}}\n\
             call1: \"<tool_call>\\n{\\\"name\\\": \\\"b\\\", \\\"arguments\\\": \" args1 \"}\\n</tool_call>\"\n\
             args1: %json {\"type\":\"object\"}\n"
        );
        let e = parse(json!({"tool_choice": "required"}).as_object().unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`tool_choice` needs a non-empty `tools` list"
        );
    }
}

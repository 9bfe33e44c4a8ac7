//! The `{name}` placeholders of workload command, args and env values. The grammar lives
//! here once so that `config check` and the node agent that expands them cannot disagree.

/// Every placeholder a workload template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "leasehold",
    "service_addr",
    "data_dir",
    "account",
    "epoch",
    "server",
];

/// `names` as a template writes them, for error messages: `{account}, {epoch}`.
pub fn braced(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("{{{name}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `{...}` names in `template` that are not placeholders, in order. An unclosed `{`
/// is left as text, since there is no placeholder it could be.
pub fn unknown_placeholders(template: &str) -> Vec<&str> {
    names(template)
        .filter(|name| !PLACEHOLDERS.contains(name))
        .collect()
}

/// The placeholders of a machine image's `kernel`, `initrd` and `cmdline`, which the boot
/// service expands for each boot (the workload's own, such as `{data_dir}`, mean nothing
/// to firmware).
pub const IMAGE_PLACEHOLDERS: &[&str] = &["account", "epoch", "server"];

/// The `{...}` names in `template` that are not image placeholders, in order.
pub fn unknown_image_placeholders(template: &str) -> Vec<&str> {
    names(template)
        .filter(|name| !IMAGE_PLACEHOLDERS.contains(name))
        .collect()
}

/// Replaces each `{name}` with `value(name)`; a name `value` does not know is kept as
/// written, so a template that passed `config check` always expands fully.
pub fn expand(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some((before, name, after)) = next_name(rest) {
        out.push_str(before);
        match value(name) {
            Some(v) => out.push_str(&v),
            None => {
                out.push('{');
                out.push_str(name);
                out.push('}');
            }
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn names(template: &str) -> impl Iterator<Item = &str> {
    let mut rest = template;
    std::iter::from_fn(move || {
        let (_, name, after) = next_name(rest)?;
        rest = after;
        Some(name)
    })
}

/// Splits at the first `{name}`: (text before, name, text after).
fn next_name(text: &str) -> Option<(&str, &str, &str)> {
    let open = text.find('{')?;
    let close = open + text[open..].find('}')?;
    Some((&text[..open], &text[open + 1..close], &text[close + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unknown_names_only() {
        assert_eq!(
            unknown_placeholders("--listen {service_addr} --x {bogus}{epoch}{}"),
            vec!["bogus", ""]
        );
        assert!(unknown_placeholders("no braces { here").is_empty());
    }

    #[test]
    fn expands_known_names() {
        let out = expand("{account}@{service_addr}/{other}", |n| match n {
            "account" => Some("shop".into()),
            "service_addr" => Some("127.0.0.1:1".into()),
            _ => None,
        });
        assert_eq!(out, "shop@127.0.0.1:1/{other}");
    }
}

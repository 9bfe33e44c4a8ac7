//! Syntax and type errors: place, key path and suggestions.

use std::path::Path;

use super::super::load_site;
use super::{BASE, edit, one_error};

#[test]
fn syntax_error_points_at_the_line() {
    let text = edit(BASE, r#"name = "shop""#, r#"name = "shop"#);
    let errors = match super::check(&text) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors,
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line_col.map(|(line, _)| line), Some(24));
    assert!(
        errors[0].message.starts_with("syntax error:"),
        "{}",
        errors[0]
    );
    let rendered = errors[0].to_string();
    assert!(rendered.starts_with("site-a.toml:24:"), "{rendered}");
    assert!(rendered.contains("24 | name = \"shop\n"), "{rendered}");
}

#[test]
fn unknown_key_suggests_the_nearest() {
    let text = edit(BASE, "min_servers = 1", "min_server = 1");
    one_error(
        &text,
        "unknown key `account[0].min_server`; did you mean `min_servers`?",
    );
}

#[test]
fn unknown_key_without_a_near_miss_lists_valid_keys() {
    let text = edit(BASE, "reserve = 1", "zzz = 1");
    let message = one_error(&text, "unknown key `lending.zzz`; valid keys here:");
    assert!(message.contains("max_lent"), "{message}");
}

#[test]
fn wrong_type_names_the_key() {
    let text = edit(BASE, "max_servers = 2", "max_servers = \"two\"");
    one_error(
        &text,
        "key `account[0].max_servers`: invalid type: string \"two\", expected u32",
    );
}

#[test]
fn missing_key_names_the_table() {
    let text = edit(BASE, "target_load = 20.0\n", "");
    one_error(&text, "missing key `target_load` in account[0]");
}

#[test]
fn caret_is_under_the_value() {
    let text = edit(BASE, "max_servers = 2", "max_servers = 0");
    let errors = match super::check(&text) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors,
    };
    let snippet = errors[0].snippet.clone().unwrap_or_default();
    assert_eq!(snippet, "   |\n26 | max_servers = 0\n   |               ^");
}

#[test]
fn unreadable_file_names_the_path() {
    let path = Path::new("/nonexistent/leasehold/site-z.toml");
    let errors = match load_site(path) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors,
    };
    let rendered = errors.to_string();
    assert!(
        rendered.starts_with("/nonexistent/leasehold/site-z.toml: cannot read config file:"),
        "{rendered}"
    );
    assert!(rendered.ends_with("1 error in 1 file"), "{rendered}");
}

//! A User-Agent string as people name the browser, for pages and mail alike.

/// A browser as people name it: "Chrome 124 on macOS", "Firefox 126 on Windows 10",
/// "Safari 17 on iPhone". `None` when the string names no browser we recognise (scripts,
/// mail scanners that hide, made-up strings): the caller shows the raw string instead.
pub fn describe_user_agent(user_agent: &str) -> Option<String> {
    // Parsing is regex work, and a dashboard view describes ten rows: a team has few
    // browsers, so each string is parsed once (until the table is full, then again).
    static DESCRIBED: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, Option<String>>>,
    > = std::sync::OnceLock::new();
    const MAX_REMEMBERED: usize = 4096;
    let described = DESCRIBED.get_or_init(Default::default);
    if let Some(known) = described
        .lock()
        .ok()
        .and_then(|map| map.get(user_agent).cloned())
    {
        return known;
    }
    let description = parse_user_agent(user_agent);
    if let Ok(mut map) = described.lock() {
        if map.len() >= MAX_REMEMBERED {
            map.clear();
        }
        map.insert(user_agent.to_string(), description.clone());
    }
    description
}

fn parse_user_agent(user_agent: &str) -> Option<String> {
    let parsed = woothee::parser::Parser::new().parse(user_agent)?;
    let known = |value: &str| !value.is_empty() && value != woothee::woothee::VALUE_UNKNOWN;
    if !known(parsed.name) {
        return None;
    }
    // Headless Chrome is how scripts and some mail scanners browse: say so rather than pass
    // it off as a person's Chrome.
    let name = match parsed.name {
        "Chrome" if user_agent.contains("HeadlessChrome/") => "Headless Chrome",
        name => name,
    };
    let major = parsed
        .version
        .split('.')
        .next()
        .filter(|major| known(major) && major.chars().all(|c| c.is_ascii_digit()));
    let mut described = match major {
        Some(major) => format!("{name} {major}"),
        None => name.to_string(),
    };
    if known(parsed.os) {
        described.push_str(" on ");
        described.push_str(os_name(parsed.os));
    }
    if parsed.category == "crawler" {
        described.push_str(" (a crawler)");
    }
    Some(described)
}

/// woothee's names for systems, as their makers spell them today.
fn os_name(os: &str) -> &str {
    match os {
        "Mac OSX" => "macOS",
        other => other,
    }
}

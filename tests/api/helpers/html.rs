//! Pages as a browser reads them (`scraper`): elements by CSS selector, and their text and
//! attributes with the entities decoded, so that an assertion is about what a person sees and
//! not about how the template escaped it. (HTML parsing also turns CRLF into LF, as browsers do.)

use scraper::{ElementRef, Html, Selector};

pub fn parse_page(html: &str) -> Html {
    Html::parse_document(html)
}

pub fn select<'a>(page: &'a Html, css: &str) -> Vec<ElementRef<'a>> {
    let selector = Selector::parse(css).unwrap();
    page.select(&selector).collect()
}

pub fn one<'a>(page: &'a Html, css: &str) -> ElementRef<'a> {
    let found = select(page, css);
    assert_eq!(found.len(), 1, "expected one {css}, found {}", found.len());
    found[0]
}

pub fn within<'a>(element: ElementRef<'a>, css: &str) -> Vec<ElementRef<'a>> {
    let selector = Selector::parse(css).unwrap();
    element.select(&selector).collect()
}

pub fn text(element: ElementRef<'_>) -> String {
    element.text().collect::<String>().trim().to_string()
}

/// The text of every element `css` selects, in page order.
pub fn texts(page: &Html, css: &str) -> Vec<String> {
    select(page, css).into_iter().map(text).collect()
}

/// The text of every element `css` selects inside `element`, in page order.
pub fn texts_within(element: ElementRef<'_>, css: &str) -> Vec<String> {
    within(element, css).into_iter().map(text).collect()
}

pub fn attr<'a>(element: ElementRef<'a>, name: &str) -> &'a str {
    element
        .value()
        .attr(name)
        .unwrap_or_else(|| panic!("no {name} on {}", element.html()))
}

/// The value of the first `<input name="NAME" value="…">` in a page (for `csrf_token`, the
/// CSRF meta tag comes first: every page has it, forms only some).
pub fn form_value(html: &str, name: &str) -> Option<String> {
    let page = parse_page(html);
    let meta = (name == "csrf_token")
        .then(|| select(&page, r#"meta[name="csrf-token"][content]"#))
        .and_then(|found| found.first().map(|meta| attr(*meta, "content").to_string()));
    meta.or_else(|| {
        select(&page, &format!(r#"input[name="{name}"][value]"#))
            .first()
            .map(|input| attr(*input, "value").to_string())
    })
}

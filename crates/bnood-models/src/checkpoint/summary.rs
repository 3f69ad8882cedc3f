//! Long error texts made short: burn lists every mismatching tensor of a parameter file; an
//! error quotes its first sentence and the first few items.

/// At most this many items of a long list are quoted in an error.
const QUOTED_ITEMS: usize = 3;

/// A long error text (burn lists every mismatching tensor) as its first sentence plus the
/// first few items of its list: `Missing tensors: 412 in all, the first: a, b, c`.
pub(crate) fn summarise(text: &str) -> String {
    const SHORT: usize = 300;
    if text.len() <= SHORT {
        return text.to_string();
    }
    if let (Some(open), Some(close)) = (text.find('['), text.rfind(']'))
        && open < close
    {
        let items = split_top_level(&text[open + 1..close]);
        let first: Vec<String> = items
            .iter()
            .take(QUOTED_ITEMS)
            .map(|i| shorten(i.trim(), 120))
            .collect();
        return format!(
            "{} {} in all, the first: {}",
            text[..open].trim_end(),
            items.len(),
            first.join("; ")
        );
    }
    shorten(text, SHORT)
}

/// Splits `list` at the commas outside brackets, braces and parentheses.
fn split_top_level(list: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0i32, 0, Vec::new());
    for (i, ch) in list.char_indices() {
        match ch {
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !list[start..].trim().is_empty() {
        items.push(&list[start..]);
    }
    items
}

/// `text` cut to at most `max` bytes (at a character boundary), marked when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} characters in all)",
        &text[..end],
        text.chars().count()
    )
}

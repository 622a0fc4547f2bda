//! Text from outside, kept to a length worth storing.

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn cut_to(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        assert_eq!(cut_to("abcdef", 3), "abc");
        assert_eq!(cut_to("ab", 3), "ab");
        assert_eq!(cut_to("aé", 2), "a", "é is two bytes");
    }
}

//! Located error messages in the style users know from compilers:
//!
//! ```text
//! Dockerfile:3:5: unknown instruction: FOO
//!     3 | FOO bar
//!       |     ^
//! ```
//!
//! Rendering is pure (bytes in, text out) and total: a line beyond the file, column 0 or a
//! line that is not UTF-8 never panics; the source excerpt is then left out (or, for column 0,
//! the caret goes under column 1).

/// Tab stops are this many columns apart when a source line is shown.
pub const TAB_WIDTH: usize = 4;

/// The line-number gutter is at least this wide, so short files line up like long ones.
const MIN_GUTTER: usize = 5;

/// Renders `message` located at `line` (1-based) and `column` (1-based, counted in characters;
/// 0 = unknown, shown as 1) of the file `file_name` whose bytes are `src`.
///
/// The first line is `NAME:LINE:COL: message`; when `line` is 0 (no location at all) it is
/// `NAME: message`. When the line exists and is valid UTF-8, it follows with its number, and a
/// caret under the column. Tabs in the shown line are expanded to stops every [`TAB_WIDTH`]
/// columns, and the caret is placed with the same expansion, so it stays under its character.
/// Other control characters are shown as `\u{FFFD}` so a Dockerfile cannot drive the terminal.
/// Every line of the result, the last included, ends with `\n`.
pub fn render(file_name: &str, src: &[u8], line: usize, column: usize, message: &str) -> String {
    let column = column.max(1);
    if line == 0 {
        return format!("{file_name}: {message}\n");
    }
    let mut out = format!("{file_name}:{line}:{column}: {message}\n");
    let Some(text) = source_line(src, line) else {
        return out;
    };
    let (shown, caret) = expand(text, column);
    let number = line.to_string();
    let gutter = number.len().max(MIN_GUTTER);
    let source = format!("{number:>gutter$} | {shown}");
    out.push_str(source.trim_end_matches(' '));
    out.push('\n');
    out.push_str(&format!("{:gutter$} | {:caret$}^\n", "", ""));
    out
}

/// The `line`-th (1-based) line of `src` without its line ending, if it exists and is UTF-8.
/// A byte-order mark at the start of the file is not part of line 1 (the parser drops it too).
fn source_line(src: &[u8], line: usize) -> Option<&str> {
    let src = src.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(src);
    if src.is_empty() {
        return None;
    }
    let src = src.strip_suffix(b"\n").unwrap_or(src);
    let raw = src.split(|b| *b == b'\n').nth(line - 1)?;
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    std::str::from_utf8(raw).ok()
}

/// The line as shown (tabs expanded, control characters replaced) and the display offset of
/// the caret for the 1-based character `column`. A column past the end of the line points
/// just after its last character.
fn expand(text: &str, column: usize) -> (String, usize) {
    let mut shown = String::with_capacity(text.len());
    let mut width = 0;
    let mut caret = None;
    for (index, ch) in text.chars().enumerate() {
        if index + 1 == column {
            caret = Some(width);
        }
        match ch {
            '\t' => {
                let stop = (width / TAB_WIDTH + 1) * TAB_WIDTH;
                shown.extend(std::iter::repeat_n(' ', stop - width));
                width = stop;
            }
            c if c.is_control() => {
                shown.push('\u{FFFD}');
                width += 1;
            }
            c => {
                shown.push(c);
                width += 1;
            }
        }
    }
    (shown, caret.unwrap_or(width))
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn renders_the_documented_example() {
        let src = b"FROM scratch\nRUN true\nFOO bar\n";
        assert_eq!(
            render("Dockerfile", src, 3, 5, "unknown instruction: FOO"),
            "Dockerfile:3:5: unknown instruction: FOO\n    3 | FOO bar\n      |     ^\n"
        );
    }

    #[test]
    fn column_zero_points_at_column_one() {
        let out = render("Dockerfile", b"FROM a\nCMD [1]\n", 2, 0, "bad");
        assert_eq!(out, "Dockerfile:2:1: bad\n    2 | CMD [1]\n      | ^\n");
    }

    #[test]
    fn the_file_name_is_shown_as_given() {
        let out = render("sub/Dockerfile.dev", b"FROM a\n", 1, 1, "m");
        assert!(out.starts_with("sub/Dockerfile.dev:1:1: m\n"), "{out}");
    }

    #[test]
    fn tabs_are_expanded_and_the_caret_follows_them() {
        // Column 3 is the `R` of `RUN` after two tabs: display offset 8.
        let out = render("Dockerfile", b"\t\tRUN x\n", 1, 3, "m");
        assert_eq!(
            out,
            "Dockerfile:1:3: m\n    1 |         RUN x\n      |         ^\n"
        );
        // A tab after two characters reaches the next stop (4), not 2 + 4.
        let out = render("Dockerfile", b"ab\tc\n", 1, 4, "m");
        assert_eq!(out, "Dockerfile:1:4: m\n    1 | ab  c\n      |     ^\n");
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let out = render("Dockerfile", "LABEL é=ü x\n".as_bytes(), 1, 11, "m");
        assert_eq!(
            out,
            "Dockerfile:1:11: m\n    1 | LABEL é=ü x\n      |           ^\n"
        );
    }

    #[test]
    fn a_column_past_the_end_points_after_the_last_character() {
        let out = render("Dockerfile", b"RUN\n", 1, 1000, "m");
        assert_eq!(out, "Dockerfile:1:1000: m\n    1 | RUN\n      |    ^\n");
    }

    #[test]
    fn a_line_beyond_the_file_omits_the_excerpt() {
        let src = b"FROM a\n";
        assert_eq!(render("Dockerfile", src, 2, 1, "m"), "Dockerfile:2:1: m\n");
        assert_eq!(
            render("Dockerfile", src, 99, 7, "m"),
            "Dockerfile:99:7: m\n"
        );
        assert_eq!(render("Dockerfile", b"", 1, 1, "m"), "Dockerfile:1:1: m\n");
    }

    #[test]
    fn the_last_line_without_a_newline_is_shown() {
        let out = render("Dockerfile", b"FROM a\nRUN b", 2, 1, "m");
        assert_eq!(out, "Dockerfile:2:1: m\n    2 | RUN b\n      | ^\n");
    }

    #[test]
    fn an_invalid_utf8_line_omits_the_excerpt_but_others_are_shown() {
        let src = b"FROM a\nRUN \xff\nRUN ok\n";
        assert_eq!(render("Dockerfile", src, 2, 5, "m"), "Dockerfile:2:5: m\n");
        let out = render("Dockerfile", src, 3, 1, "m");
        assert_eq!(out, "Dockerfile:3:1: m\n    3 | RUN ok\n      | ^\n");
    }

    #[test]
    fn line_zero_has_no_location() {
        assert_eq!(
            render("Dockerfile", b"", 0, 0, "file with no instructions"),
            "Dockerfile: file with no instructions\n"
        );
    }

    #[test]
    fn crlf_bom_and_control_characters_do_not_reach_the_terminal() {
        let out = render("Dockerfile", b"\xEF\xBB\xBFFROM a\x1b[31m\r\n", 1, 5, "m");
        assert_eq!(
            out,
            "Dockerfile:1:5: m\n    1 | FROM a\u{FFFD}[31m\n      |     ^\n"
        );
    }

    #[test]
    fn the_gutter_widens_for_long_line_numbers() {
        let src = "x\n".repeat(123_456);
        let out = render("Dockerfile", src.as_bytes(), 123_456, 1, "m");
        assert_eq!(out, "Dockerfile:123456:1: m\n123456 | x\n       | ^\n");
    }

    #[test]
    fn an_empty_line_has_no_trailing_space() {
        let out = render("Dockerfile", b"FROM a\n\n", 2, 1, "m");
        assert_eq!(out, "Dockerfile:2:1: m\n    2 |\n      | ^\n");
    }
}

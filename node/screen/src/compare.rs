//! Cell-for-cell comparison of two screens, for tests.
//!
//! [`Screen::compare`] checks what a user would see and what decides how
//! later output lands: size, which screen is active, the cursor, tracked
//! modes, every cell (character, width, pen) and soft-wrap flag of the
//! active screen and of the primary screen behind an alternate one, and
//! finally the full dump, which covers state with no public accessor in avt
//! (scroll region, saved cursors, origin/insert/auto-wrap modes, charsets,
//! tab stops, the current pen, a half-parsed escape sequence).

use crate::Screen;
use avt::Line;

impl Screen {
    /// `Ok(())` when `other` is in the same state as `self`, otherwise a
    /// description of the first difference found.
    pub fn compare(&self, other: &Screen) -> Result<(), String> {
        same("size", self.size(), other.size())?;
        same(
            "active screen",
            self.vt.active_screen_kind(),
            other.vt.active_screen_kind(),
        )?;
        same("cursor", self.vt.cursor(), other.vt.cursor())?;
        same(
            "cursor keys mode",
            self.vt.cursor_key_app_mode(),
            other.vt.cursor_key_app_mode(),
        )?;
        same("extra modes", self.extra_modes(), other.extra_modes())?;
        same("pending UTF-8", self.utf8.pending(), other.utf8.pending())?;
        compare_lines(
            "active screen",
            self.vt.screen().visible_lines(),
            other.vt.screen().visible_lines(),
        )?;
        compare_lines(
            "primary screen",
            self.vt.primary_screen().visible_lines(),
            other.vt.primary_screen().visible_lines(),
        )?;
        let (ours, theirs) = (self.dump(), other.dump());
        if ours != theirs {
            return Err(format!(
                "dumps differ:\n  {:?}\n  {:?}",
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            ));
        }
        Ok(())
    }
}

fn same<T: PartialEq + std::fmt::Debug>(what: &str, ours: T, theirs: T) -> Result<(), String> {
    if ours == theirs {
        Ok(())
    } else {
        Err(format!("{what}: {ours:?} != {theirs:?}"))
    }
}

fn compare_lines<'a>(
    what: &str,
    ours: impl Iterator<Item = &'a Line>,
    theirs: impl Iterator<Item = &'a Line>,
) -> Result<(), String> {
    for (row, (a, b)) in ours.zip(theirs).enumerate() {
        same(
            &format!("{what} row {row} wrapped"),
            a.is_wrapped(),
            b.is_wrapped(),
        )?;
        same(&format!("{what} row {row} width"), a.len(), b.len())?;

        for (col, (x, y)) in a.cells().iter().zip(b.cells()).enumerate() {
            same(&format!("{what} row {row} col {col}"), x, y)?;
        }
    }

    Ok(())
}

//! `cmdop-dist`: what a package needs besides the binaries, generated from the binaries' own
//! clap models so it never drifts from `--help`: shell completion scripts (clap_complete) and
//! man pages (clap_mangen). Both `cmdop` and `cmdop-node` expose it as their `completions` and
//! `man` subcommands; `node/dist/build-deb.sh` calls those to fill the Debian package.
//!
//! The systemd units and the Debian build script live next to this crate (`systemd/`,
//! `build-deb.sh`); the unit tests at the bottom of this file check the units too.

use anyhow::Context as _;
use clap::Command;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use clap_complete::Shell;

/// Arguments of `completions`: the shell to print a completion script for.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Arguments of `man`: print the main page, or write every page to a directory.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write one page per command and subcommand (NAME.1, NAME-SUBCOMMAND.1, ...) into DIR
    /// instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The completion script of `command` for `shell`, registered for the command's name.
pub fn completion_script(mut command: Command, shell: Shell) -> Vec<u8> {
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    script
}

/// The main man page of `command` (section 1), as roff.
pub fn man_page(command: Command) -> anyhow::Result<Vec<u8>> {
    let mut page = Vec::new();
    man(command.clone(), &source_of(&command))
        .render(&mut page)
        .context("cannot render the man page")?;
    Ok(page)
}

/// The page of `command`, titled in capitals as man pages are (`.TH CMDOP-SESSION-LIST 1`),
/// with `source` (the program and its version) in the footer.
fn man(command: Command, source: &str) -> clap_mangen::Man {
    let title = command
        .get_display_name()
        .unwrap_or(command.get_name())
        .to_uppercase();
    clap_mangen::Man::new(command).title(title).source(source)
}

/// The program and its version, for every page's footer.
fn source_of(command: &Command) -> String {
    match command.get_version() {
        Some(version) => format!("{} {version}", command.get_name()),
        None => command.get_name().to_string(),
    }
}

/// Writes the man pages of `command` and of each visible subcommand, recursively, into `dir`
/// (created if missing), named as `man` looks them up (`cmdop-session-list.1`); returns the
/// files written.
pub fn write_man_pages(command: Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Building sets each subcommand's display name ("cmdop-session-list"), which names its page.
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let mut written = Vec::new();
    let source = source_of(&command);
    write_pages_of(command, &source, dir, &mut written)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    Ok(written)
}

/// Writes the page of `command`, then those of its visible subcommands, recursively.
fn write_pages_of(
    command: Command,
    source: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let subcommands: Vec<Command> = command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .cloned()
        .collect();
    written.push(man(command, source).generate_to(dir)?);
    for sub in subcommands {
        write_pages_of(sub, source, dir, written)?;
    }
    Ok(())
}

/// Runs `completions`: prints the script for `args.shell` to stdout.
pub fn run_completions(command: Command, args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&completion_script(command, args.shell))?;
    stdout.flush()?;
    Ok(())
}

/// Runs `man`: prints the main page to stdout, or with `--dir` writes every page and lists
/// the files on stderr.
pub fn run_man(command: Command, args: &ManArgs) -> anyhow::Result<()> {
    match &args.dir {
        Some(dir) => {
            for path in write_man_pages(command, dir)? {
                eprintln!("wrote {}", path.display());
            }
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&man_page(command)?)?;
            stdout.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! `cmdop completions SHELL`: the shell completion script. The static part (subcommands,
//! flags, values) comes from the clap model through `cmdop-dist`; for bash, zsh and fish a
//! few lines of shell are added that ask `cmdop __complete` (see [`super::complete`]) for host
//! and session names. Elvish and PowerShell get the static part only.
//!
//! - bash: `_cmdop_dynamic` is registered instead of the generated `_cmdop` and falls back
//!   to it.
//! - zsh: the generated `_cmdop` is renamed `_cmdop_static`; a new `_cmdop` asks first. The
//!   script stays a `#compdef` file, loadable from `$fpath` or by `source`.
//! - fish: one more `complete` line whose condition asks and whose values are the answer.

use anyhow::bail;
use cmdop_dist::{CompletionsArgs, Shell};
use std::io::Write;

const BASH: &str = include_str!("completions/dynamic.bash");
const ZSH: &str = include_str!("completions/dynamic.zsh");
const FISH: &str = include_str!("completions/dynamic.fish");

/// The line of the generated zsh script that defines its main function.
const ZSH_MAIN: &str = "\n_cmdop() {\n";
/// The line of the generated zsh script that starts its load-time dispatch.
const ZSH_DISPATCH: &str = "\nif [ \"$funcstack[1]\" = \"_cmdop\" ]; then\n";

/// Runs `cmdop completions`.
pub fn run(command: clap::Command, args: &CompletionsArgs) -> anyhow::Result<()> {
    let script = script(command, args.shell)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(script.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// The whole completion script of `command` for `shell`.
pub fn script(command: clap::Command, shell: Shell) -> anyhow::Result<String> {
    let generated = String::from_utf8(cmdop_dist::completion_script(command, shell))?;
    Ok(match shell {
        Shell::Bash => generated + BASH,
        Shell::Zsh => zsh(&generated)?,
        Shell::Fish => generated + FISH,
        _ => generated,
    })
}

/// The generated zsh script with its main function renamed `_cmdop_static` and the dynamic
/// `_cmdop` defined before the dispatch that runs at load time.
fn zsh(generated: &str) -> anyhow::Result<String> {
    let (Some(main), Some(dispatch)) = (generated.find(ZSH_MAIN), generated.find(ZSH_DISPATCH))
    else {
        bail!("the zsh script from clap_complete no longer has the expected layout; update cli/src/cmd/completions.rs");
    };
    if main > dispatch {
        bail!("the zsh script from clap_complete no longer has the expected layout; update cli/src/cmd/completions.rs");
    }
    let renamed = "\n_cmdop_static() {\n";
    Ok([
        &generated[..main],
        renamed,
        &generated[main + ZSH_MAIN.len()..dispatch + 1],
        ZSH,
        &generated[dispatch + 1..],
    ]
    .concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn zsh_asks_first_then_falls_back_to_the_renamed_function() {
        let script = script(crate::Cli::command(), Shell::Zsh).expect("script");
        assert!(script.starts_with("#compdef cmdop"), "{script}");
        assert_eq!(script.matches("\n_cmdop() {\n").count(), 1, "{script}");
        let static_at = script.find("\n_cmdop_static() {\n").expect("renamed");
        let dynamic_at = script.find("cmdop __complete --").expect("asks");
        let dispatch_at = script.find(ZSH_DISPATCH).expect("dispatch");
        assert!(
            static_at < dynamic_at && dynamic_at < dispatch_at,
            "{script}"
        );
    }

    #[test]
    fn bash_and_fish_ask_cmdop_complete() {
        for shell in [Shell::Bash, Shell::Fish] {
            let script = script(crate::Cli::command(), shell).expect("script");
            assert!(script.contains("cmdop __complete --"), "{shell}");
            assert!(
                !script.contains("__complete\""),
                "{shell} offers __complete"
            );
        }
    }
}

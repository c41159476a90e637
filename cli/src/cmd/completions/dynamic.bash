
# cmdop: host and session names. 'cmdop __complete' answers with the names when the word
# under the cursor is a host or a session (hosts from config.yaml at once, sessions from the
# nodes within 300 ms), and fails otherwise; then the static completion above answers.
_cmdop_dynamic() {
    local candidates
    local words=("${COMP_WORDS[@]:0:COMP_CWORD}")
    local current="${COMP_WORDS[COMP_CWORD]}"
    # `--host=<Tab>`: bash makes `=` a word of its own and the one under the cursor.
    [[ $current == = ]] && words+=("=") && current=
    if candidates=$(cmdop __complete -- "${words[@]}" "$current" 2>/dev/null); then
        # One name a line, taken as it is (no word splitting, no glob expansion).
        COMPREPLY=()
        if [[ -n $candidates ]]; then
            if ((BASH_VERSINFO[0] >= 4)); then
                mapfile -t COMPREPLY <<<"$candidates"
            else
                local line
                while IFS= read -r line; do COMPREPLY+=("$line"); done <<<"$candidates"
            fi
        fi
        # No names is no names, not a reason to offer file names.
        compopt +o default +o bashdefault 2>/dev/null
        return 0
    fi
    _cmdop "$@"
}
if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _cmdop_dynamic -o nosort -o bashdefault -o default cmdop
else
    complete -F _cmdop_dynamic -o bashdefault -o default cmdop
fi

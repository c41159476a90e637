
# cmdop: host and session names. 'cmdop __complete' answers with the names when the word
# under the cursor is a host or a session (hosts from config.yaml at once, sessions from the
# nodes within 300 ms), and fails otherwise; then the static completion above answers.
_cmdop_dynamic() {
    local candidates
    if candidates=$(cmdop __complete -- "${COMP_WORDS[@]:0:COMP_CWORD+1}" 2>/dev/null); then
        local IFS=$'\n'
        COMPREPLY=($candidates)
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

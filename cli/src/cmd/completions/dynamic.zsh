# cmdop: host and session names. 'cmdop __complete' answers with the names when the word
# under the cursor is a host or a session (hosts from config.yaml at once, sessions from the
# nodes within 300 ms), and fails otherwise; then the static completion, _cmdop_static, answers.
_cmdop() {
    local answer
    if answer=$(cmdop __complete -- "${(@)words[1,CURRENT]}" 2>/dev/null); then
        local -a candidates
        candidates=(${(f)answer})
        compadd -a candidates
        return 0
    fi
    _cmdop_static "$@"
}



# cmdop: host and session names. 'cmdop __complete' answers with the names when the word
# under the cursor is a host or a session (hosts from config.yaml at once, sessions from the
# nodes within 300 ms), and fails otherwise (then only the completions above apply).
# The condition asks once per Tab and keeps the names for the values (fish evaluates the
# condition first); `set` returns the status of the command substitution.
function __cmdop_dynamic
    set -g __cmdop_dynamic_names (cmdop __complete -- (commandline -opc) (commandline -ct) 2>/dev/null)
end
complete -c cmdop -f -n __cmdop_dynamic -a '$__cmdop_dynamic_names'

#!/bin/sh
# Run the official @stomp/stompjs v7.1.1 node spec suite (vendored in vendor/, unchanged)
# against a running relay. Only TEST.url differs from the upstream suite: it is
# rewritten in a scratch copy, never in the vendored files.
#
#   tests/js/stompjs_suite/run.sh [ws://127.0.0.1:15674/ws] [jasmine options...]
#
# Needs tests/js/node_modules (npm ci in tests/js: jasmine and ws are pinned in
# tests/js/package.json). Prints jasmine's summary; the clients' debug log goes to
# $RUN/suite.log. Exit status: jasmine's (0 when every spec passed).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
url=${1:-ws://127.0.0.1:15674/ws}
[ $# -gt 0 ] && shift
jasmine="$here/../node_modules/jasmine/bin/jasmine.js"
if [ ! -f "$jasmine" ]; then
    echo "jasmine is missing: run 'npm ci' in tests/js" >&2
    exit 2
fi
# The scratch copy lives under tests/js so that require('ws') resolves to its node_modules.
RUN=${RUN:-"$here/.run"}
rm -rf "$RUN"
mkdir -p "$RUN"
cp -R "$here/vendor/spec" "$here/vendor/bundles" "$RUN/"
config="$RUN/spec/config/node-config.js"
sed "s|^  url: '[^']*',|  url: '$url',|" "$here/vendor/spec/config/node-config.js" >"$config"
if ! grep -q "^  url: '$url'," "$config"; then
    echo "could not set TEST.url in $config" >&2
    exit 2
fi
cd "$RUN"
status=0
node "$jasmine" --config=spec/support/jasmine.json "$@" >"$RUN/suite.log" 2>&1 || status=$?
# jasmine's own report, without the clients' debug lines
grep -v -E '^(CLIENT [0-9]+|Opening Web Socket|Web Socket Opened|Connection closed|>>>|<<<|Received data)' \
    "$RUN/suite.log" | grep -v '^\s*$' | tail -n 200
summary=$(grep -E '^[0-9]+ specs?, [0-9]+ failures?' "$RUN/suite.log" | tail -n 1 || true)
if [ -n "$summary" ]; then
    specs=${summary%% spec*}
    failures=${summary#*, }
    failures=${failures%% failure*}
    echo "passed $((specs - failures)) of $specs specs"
fi
echo "log: $RUN/suite.log"
exit $status

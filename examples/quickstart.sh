#!/usr/bin/env bash
# Quickstart: publish a first API through a running Turnpike and call it through the gateway.
#
# Run it from the directory where a freshly started `turnpike` is running (it reads the bootstrap
# admin token from ./turnpike-data/admin-token). Needs only bash, curl and python3; no internet:
# the upstream is a tiny local server started here and stopped on exit.
#
#   TURNPIKE_ADMIN_URL   admin listener   (default http://127.0.0.1:8001)
#   TURNPIKE_GATEWAY_URL gateway listener (default http://127.0.0.1:8000)
set -euo pipefail

ADMIN_URL="${TURNPIKE_ADMIN_URL:-http://127.0.0.1:8001}"
GATEWAY_URL="${TURNPIKE_GATEWAY_URL:-http://127.0.0.1:8000}"
TOKEN_FILE="./turnpike-data/admin-token"
ADMIN_API="${ADMIN_URL%/}/admin/v1"
GATEWAY_URL="${GATEWAY_URL%/}"

current_step="starting"
step() {
    current_step="$1"
    printf '==> %s\n' "$1"
}
fail() {
    printf 'quickstart: FAILED while %s\n' "$current_step" >&2
    if (($# > 0)); then printf '%s\n' "$@" >&2; fi
    exit 1
}

# A field of the JSON object on stdin (jq is not assumed to be installed).
json_field() {
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# An admin API call: prints the response body, or fails the current step with the server's
# problem details.
admin() {
    local method="$1" path="$2" body="${3-}" response
    local args=(--fail-with-body -sS -X "$method" -H "Authorization: Bearer $token" -H "Accept: application/json")
    if [[ -n "$body" ]]; then
        args+=(-H "Content-Type: application/json" --data "$body")
    fi
    if ! response="$(curl "${args[@]}" "$ADMIN_API$path" 2>&1)"; then
        fail "$method $ADMIN_API$path" "$response"
    fi
    printf '%s\n' "$response"
}

step "checking prerequisites"
for tool in curl python3; do
    command -v "$tool" >/dev/null || fail "$tool is required"
done
[[ -r "$TOKEN_FILE" ]] ||
    fail "no $TOKEN_FILE here: run this from the directory where turnpike is running (it writes the token on first start)"
read -r token <"$TOKEN_FILE" || true
[[ -n "${token:-}" ]] || fail "$TOKEN_FILE is empty"

workdir="$(mktemp -d)"
upstream_pid=""
cleanup() {
    if [[ -n "$upstream_pid" ]]; then kill "$upstream_pid" 2>/dev/null || true; fi
    rm -rf "$workdir"
}
trap cleanup EXIT

step "starting a local upstream"
# Binds port 0 and prints the port it got, so it never collides with anything running.
python3 -c '
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"hello": "world", "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
print(server.server_address[1], flush=True)
server.serve_forever()
' >"$workdir/upstream-port" 2>"$workdir/upstream.log" &
upstream_pid=$!
upstream_port=""
for _ in $(seq 1 100); do
    # The file may not exist yet: the background job opens it after this loop starts.
    { read -r upstream_port <"$workdir/upstream-port"; } 2>/dev/null || true
    [[ -n "$upstream_port" ]] && break
    kill -0 "$upstream_pid" 2>/dev/null || fail "the upstream exited: $(cat "$workdir/upstream.log")"
    sleep 0.05
done
[[ -n "$upstream_port" ]] || fail "the upstream did not report its port within 5 seconds"
echo "    upstream listening on http://127.0.0.1:$upstream_port"

suffix="$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
slug="hello-$suffix"

step "creating upstream quickstart-$suffix"
upstream="$(admin POST /upstreams "{\"name\":\"quickstart-$suffix\",\"targets\":[{\"url\":\"http://127.0.0.1:$upstream_port\"}]}")"
upstream_id="$(json_field id <<<"$upstream")" || fail "no id in: $upstream"

step "creating API $slug"
admin POST /apis "{\"name\":\"Hello\",\"slug\":\"$slug\"}" >/dev/null

step "creating version v1 of $slug (base path /$slug/v1)"
version_body="$(python3 -c 'import json, sys; print(json.dumps({"label": "v1", "upstream_id": sys.argv[1]}))' "$upstream_id")"
admin POST "/apis/$slug/versions" "$version_body" >/dev/null

step "adding route /* to $slug v1"
admin POST "/apis/$slug/versions/v1/routes" '{"path":"/*"}' >/dev/null

step "publishing $slug v1"
admin POST "/apis/$slug/versions/v1/publish" >/dev/null

step "calling GET $GATEWAY_URL/$slug/v1/greeting through the gateway"
# Publishing returns before every gateway has applied the new configuration: retry for 5 s.
status=""
deadline=$(($(date +%s%N) + 5000000000))
while :; do
    status="$(curl -sS --max-time 2 -o "$workdir/answer" -w '%{http_code}' \
        "$GATEWAY_URL/$slug/v1/greeting" 2>"$workdir/curl.err")" || status="000"
    [[ "$status" == 200 ]] && break
    (($(date +%s%N) < deadline)) || break
    sleep 0.2
done
answer="$(cat "$workdir/answer" 2>/dev/null || true)"
if [[ "$status" == 000 ]]; then
    fail "could not reach the gateway at $GATEWAY_URL for 5 seconds" "$(cat "$workdir/curl.err")"
elif [[ "$status" != 200 ]]; then
    fail "the gateway still answered $status after 5 seconds" "$answer"
fi
echo "    upstream answered: $answer"

step "checking the answer came from our upstream with the base path stripped"
python3 -c '
import json, sys
answer = json.loads(sys.argv[1])
assert answer == {"hello": "world", "path": "/greeting"}, answer
' "$answer" 2>/dev/null || fail "expected {\"hello\":\"world\",\"path\":\"/greeting\"}, got: $answer"

cat <<DONE

Done. API "$slug" v1 is published at $GATEWAY_URL/$slug/v1/.
(The local upstream stops with this script; point upstream quickstart-$suffix at a real service
with PATCH $ADMIN_API/upstreams/quickstart-$suffix to keep the API answering.)
DONE

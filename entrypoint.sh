#!/usr/bin/env bash
#
# entrypoint.sh: Docker ENTRYPOINT of the DeepStream YOLO11 image.
#
# usage: entrypoint.sh [APP_OPTION...]      build the TensorRT engine if needed, then exec the app
#        entrypoint.sh COMMAND [ARG...]     exec COMMAND as is (no engine step), e.g. bash, echo hi
#
# Which commands get the engine step (see _ds_wants_engine):
#   - no argument, or a first argument that starts with "-"   -> the app (main_low_latency.py)
#   - main_low_latency.py [ARG...]                            -> the app
#   - python3|python PATH/main_low_latency.py [ARG...]        -> the app
#   - anything else (bash, sh, echo, python3 other.py ...)    -> exec as is, nothing is built,
#     so `docker run -it IMAGE bash` is a quick debugging shell even on a cold volume.
#   - -h/--help anywhere in the app's arguments               -> the app's help, nothing is built.
# Rebuild explicitly with: docker exec CONTAINER python3 /app/auto_build_engine.py --force
#
# Environment (the CLI contract of auto_build_engine.py: it reads, validates and defaults them
# itself, see `python3 auto_build_engine.py --help`):
#   MODEL PT_PATH ONNX_PATH IMGSZ MIN_BATCH OPT_BATCH MAX_BATCH PRECISION WORKSPACE_MB
#   ENGINE_DIR MODELS_DIR CONFIG_DIR GPU_ID NUM_SOURCES ...
# and of this script:
#   APP_DIR            where auto_build_engine.py and main_low_latency.py live (default: this dir)
#   SKIP_ENGINE_BUILD  1|true|yes: start the app without the engine step (0|false|no or unset: with it)
#
# Exit codes: the builder's (1 build failed, 2 invalid variable or input, 3 environment missing,
# 130/143 interrupted) when the engine step fails; 2 for an invalid variable, checked before
# anything is built; otherwise the exec'd program's own.
set -Eeuo pipefail

# usage: ds_log MESSAGE...
# Plain, greppable progress lines on stdout: docker logs C | grep '^entrypoint:'
ds_log() {
	printf 'entrypoint: %s\n' "$*"
}

# usage: ds_error MESSAGE...
# One line on stderr; MESSAGE says what to do.
ds_error() {
	printf 'entrypoint: error: %s\n' "$*" >&2
}

# usage: _is_sourced
# true when this file is sourced (tests, other scripts) rather than run: then nothing runs.
_is_sourced() {
	# https://unix.stackexchange.com/a/215279
	[ "${#FUNCNAME[@]}" -ge 2 ] \
		&& [ "${FUNCNAME[0]}" = '_is_sourced' ] \
		&& [ "${FUNCNAME[1]}" = 'source' ]
}

# usage: docker_setup_env
# APP_DIR (default: the directory of this script) and the DeepStream/CUDA environment.
docker_setup_env() {
	local script_dir
	script_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
	: "${APP_DIR:=$script_dir}"
	export APP_DIR
	if [ -r "$script_dir/setup_deepstream_env.sh" ]; then
		# shellcheck source=setup_deepstream_env.sh
		source "$script_dir/setup_deepstream_env.sh"
	else
		ds_log "warning: $script_dir/setup_deepstream_env.sh not found; DeepStream paths not set"
	fi
}

# usage: docker_verify_env
# The variables of this script, before anything runs: one line and exit 2 on a bad one. The
# builder's variables are validated by the builder itself, with its own rules (an empty
# variable counts as unset): the engine step refuses a bad one with one line and exit 2 before
# anything is built, and without an engine step ds_check_tool_env asks it (--check-env).
# Values are only compared, never evaluated: spaces, quotes or $(...) stay plain data.
docker_verify_env() {
	case "${SKIP_ENGINE_BUILD:-0}" in
		0 | 1 | [Tt]rue | TRUE | [Ff]alse | FALSE | yes | YES | no | NO) ;;
		*)
			ds_error "SKIP_ENGINE_BUILD='${SKIP_ENGINE_BUILD}' is not one of 1, true, yes (skip the engine step) or 0, false, no (unset it to keep the step)"
			exit 2
			;;
	esac
}

# usage: _ds_require_builder
_ds_require_builder() {
	if [ ! -f "$APP_DIR/auto_build_engine.py" ]; then
		ds_error "$APP_DIR/auto_build_engine.py not found (set APP_DIR to the directory that holds it)"
		exit 2
	fi
}

# usage: ( _ds_exec_builder [ARG...] ) or _ds_exec_builder [ARG...] &
# Replaces the (sub)shell with the builder, so a background job's $! is the builder's pid. It
# runs as the module compiled into the image: `-m` runs from the cached bytecode (compileall in
# the Dockerfile), a script path would be recompiled at every start, which alone costs more than
# the whole warm check; -P keeps the current directory off sys.path so only APP_DIR can provide
# the module.
_ds_exec_builder() {
	PYTHONPATH="$APP_DIR${PYTHONPATH:+:$PYTHONPATH}" exec python3 -P -m auto_build_engine "$@"
}

# usage: ds_check_tool_env
# Without an engine step (SKIP_ENGINE_BUILD): the builder's variables, checked by the builder
# with the rules of a run (--check-env: no GPU, no heavy import); silent when valid, else its
# one line and exit 2.
ds_check_tool_env() {
	local rc=0
	_ds_require_builder
	(_ds_exec_builder --check-env) || rc=$?
	if [ "$rc" -ne 0 ]; then
		exit "$rc"
	fi
}

# usage: _ds_skip_build
_ds_skip_build() {
	case "${SKIP_ENGINE_BUILD:-0}" in
		1 | true | TRUE | True | yes | YES) return 0 ;;
		*) return 1 ;;
	esac
}

# usage: _ds_is_app PATH
# true for main_low_latency.py, whatever directory it is given in
_ds_is_app() {
	[ "${1##*/}" = 'main_low_latency.py' ]
}

# usage: _ds_wants_engine "$@"
# true when "$@" (after _main's rewriting) starts the app without asking for its help
_ds_wants_engine() {
	case "${1:-}" in
		python | python3 | python3.*)
			_ds_is_app "${2:-}" || return 1
			shift 2
			;;
		*)
			_ds_is_app "${1:-}" || return 1
			shift
			;;
	esac
	local arg
	for arg; do
		case "$arg" in
			-h | --help) return 1 ;;
			--) break ;;
		esac
	done
	return 0
}

# usage: _ds_now_us
# microseconds since the epoch (EPOCHREALTIME of bash 5; its decimal sign follows the locale)
_ds_now_us() {
	local t="${EPOCHREALTIME:-}"
	if [ -n "$t" ]; then
		printf '%s\n' "${t//[!0-9]/}"
	else
		printf '%s000000\n' "$(date +%s)"
	fi
}

# usage: ds_run_builder
# Runs the builder in ensure mode and returns its exit code. It runs in the background and is
# waited for, so that a SIGTERM/SIGINT sent to this shell (docker stop; also when bash is PID 1
# without tini) is passed on to the builder, which then stops cleanly (exit 143/130) instead of
# being SIGKILLed when the stop timeout runs out. (A background job of a non-interactive shell
# ignores SIGINT, so SIGTERM is sent for both.)
ds_run_builder() {
	local pid rc
	_ds_signalled=''
	_ds_exec_builder &
	pid=$!
	# the signal is remembered too: a builder that still exits 0 (it was finishing) must not
	# let the app start after a stop was asked for
	# shellcheck disable=SC2064  # expand $pid now: the trap must name this builder
	trap "_ds_signalled=143; kill -TERM $pid 2>/dev/null || true" TERM HUP
	# shellcheck disable=SC2064
	trap "_ds_signalled=130; kill -TERM $pid 2>/dev/null || true" INT
	while :; do
		rc=0
		wait "$pid" || rc=$?
		# wait returns >128 when a trapped signal interrupted it; go on while the builder lives
		if [ "$rc" -gt 128 ] && kill -0 "$pid" 2> /dev/null; then
			continue
		fi
		break
	done
	trap - TERM INT HUP
	if [ -n "$_ds_signalled" ]; then
		rc="$_ds_signalled"
	fi
	return "$rc"
}

# usage: ds_ensure_engine
# The build-if-needed step: the builder validates its variables first (bad one: its one line,
# exit 2, nothing built), then decides (valid engine: reuse; else build under its lock) and
# prints its own report (GPU, driver, CUDA, TensorRT, DeepStream, engine path, "reused" or
# "built in N s"). On failure it has printed one line on stderr; for a failed or interrupted
# build this adds one line; it exits with the builder's code, so the app never starts without
# its engine.
ds_ensure_engine() {
	_ds_require_builder
	ds_log "engine: checking the TensorRT engine (a first start builds it, which can take minutes)"
	local start end ms rc=0
	start="$(_ds_now_us)"
	ds_run_builder || rc=$?
	end="$(_ds_now_us)"
	ms=$(((end - start) / 1000))
	if [ "$rc" -ne 0 ]; then
		case "$rc" in
			2) ;; # bad input: the builder's one line says what to change
			130 | 143) printf 'entrypoint: engine build interrupted (exit %s); the app is not started\n' "$rc" >&2 ;;
			*) printf 'entrypoint: engine build failed (exit %s); the app is not started\n' "$rc" >&2 ;;
		esac
		exit "$rc"
	fi
	ds_log "$(printf 'engine: step took %d.%03d s' $((ms / 1000)) $((ms % 1000)))"
}

# usage: ds_default_num_sources APP_ARG...
# nvinfer's batch-size must cover every camera: when NUM_SOURCES is not set, count the app's
# sources (SOURCES, comma-separated, or its --source options) so the config fits them.
#    ie: SOURCES=rtsp://a,rtsp://b -> NUM_SOURCES=2
ds_default_num_sources() {
	if [ -n "${NUM_SOURCES:-}" ]; then
		return 0
	fi
	local count=0 arg entry
	local -a entries
	for arg in "$@"; do
		case "$arg" in
			--source | --source=*) count=$((count + 1)) ;;
		esac
	done
	if [ "$count" -eq 0 ] && [ -n "${SOURCES:-}" ]; then
		IFS=',' read -r -a entries <<< "$SOURCES"
		for entry in "${entries[@]}"; do
			if [ -n "${entry// /}" ]; then
				count=$((count + 1))
			fi
		done
	fi
	if [ "$count" -gt 1 ]; then
		export NUM_SOURCES="$count"
		ds_log "engine: NUM_SOURCES=$count (one batch slot per source)"
	fi
}

# usage: _ds_quote ARG...
# ARGs as one shell-quoted line, for logs only
_ds_quote() {
	local out
	printf -v out '%q ' "$@"
	printf '%s\n' "${out% }"
}

_main() {
	# nothing, an empty first argument (e.g. compose `command: ""`, dropped) or an option
	# first: start the app with these options
	if [ "$#" -gt 0 ] && [ -z "$1" ]; then
		shift
	fi
	if [ "$#" -eq 0 ] || [ "${1:0:1}" = '-' ]; then
		set -- python3 "$APP_DIR/main_low_latency.py" "$@"
	elif [ "$1" = 'main_low_latency.py' ]; then
		shift
		set -- python3 "$APP_DIR/main_low_latency.py" "$@"
	fi

	if _ds_wants_engine "$@"; then
		docker_verify_env
		ds_default_num_sources "$@"
		if _ds_skip_build; then
			ds_check_tool_env
			ds_log "engine: SKIP_ENGINE_BUILD=${SKIP_ENGINE_BUILD}: not checking the engine"
		else
			ds_ensure_engine
		fi
		ds_log "starting: $(_ds_quote "$@")"
	fi
	exec "$@"
}

if ! _is_sourced; then
	docker_setup_env
	_main "$@"
fi

# shellcheck shell=bash
#
# setup_deepstream_env.sh: DeepStream and CUDA environment for the entrypoint and for shells.
#
# usage: source setup_deepstream_env.sh
#    ie: . /app/setup_deepstream_env.sh && echo "$DS_VERSION $CUDA_VER"
#
# Exports:
#   DS_ROOT          DeepStream root ($DEEPSTREAM_ROOT, default /opt/nvidia/deepstream/deepstream)
#   DS_VERSION       from the first "Version: X.Y" line of $DS_ROOT/version
#   LD_LIBRARY_PATH  + $DS_ROOT/lib              (added once, never duplicated)
#   GST_PLUGIN_PATH  + $DS_ROOT/lib/gst-plugins  (added once, never duplicated)
#   CUDA_VER         major.minor of the toolkit in $CUDA_HOME (default /usr/local/cuda), from
#                    version.json, else from `nvcc --version`; a CUDA_VER set by the user is kept
#                    (the nvdsinfer_yolo Makefile and DeepStream's own Makefiles read it)
#   USE_NEW_NVSTREAMMUX is passed through untouched.
#
# Contract: sourcing is idempotent (a second source changes no variable), safe under `set -u`,
# `set -e` and `pipefail` of the caller, never exits the caller's shell and returns 0 even
# outside the image; every missing piece is reported as one line on stderr.
# Everything runs inside functions with `local` variables, and the functions are removed at
# the end, so the caller's shell is left with the exported variables only.

# usage: _ds_env_warn MESSAGE...
_ds_env_warn() {
	printf 'setup_deepstream_env: %s\n' "$*" >&2
}

# usage: _ds_env_path_add VAR DIR
#    ie: _ds_env_path_add LD_LIBRARY_PATH /opt/nvidia/deepstream/deepstream/lib
# Appends DIR to the colon list in VAR unless it is already an entry; an unset or empty VAR
# becomes exactly DIR (no leading or trailing empty entry, which would mean "the current
# directory" to the dynamic loader).
_ds_env_path_add() {
	local var="$1" dir="$2"
	local cur="${!var-}"
	case ":$cur:" in
		*":$dir:"*) ;;
		*)
			if [ -z "$cur" ]; then
				cur="$dir"
			else
				cur="$cur:$dir"
			fi
			;;
	esac
	printf -v "$var" '%s' "$cur"
	export "${var?}"
}

# usage: _ds_env_cuda_version CUDA_HOME
#    ie: _ds_env_cuda_version /usr/local/cuda   # prints 12.8
# Prints major.minor of the CUDA toolkit, or nothing. Pure bash for version.json (no python,
# no jq); nvcc only as a fallback, first $CUDA_HOME/bin/nvcc, then the one on PATH.
_ds_env_cuda_version() {
	local home="$1" json='' out='' nvcc=''
	local re_json='"cuda"[[:space:]]*:[[:space:]]*\{[^}]*"version"[[:space:]]*:[[:space:]]*"([0-9]+)\.([0-9]+)'
	if [ -r "$home/version.json" ]; then
		json="$(< "$home/version.json")" || json=''
		if [[ "$json" =~ $re_json ]]; then
			printf '%s.%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
			return 0
		fi
	fi
	if [ -x "$home/bin/nvcc" ]; then
		nvcc="$home/bin/nvcc"
	elif command -v nvcc > /dev/null 2>&1; then
		nvcc="$(command -v nvcc)" || nvcc=''
	fi
	if [ -n "$nvcc" ]; then
		out="$("$nvcc" --version 2> /dev/null)" || out=''
		if [[ "$out" =~ release[[:space:]]+([0-9]+)\.([0-9]+) ]]; then
			printf '%s.%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
		fi
	fi
	return 0
}

# usage: _ds_env_ds_version VERSION_FILE
#    ie: _ds_env_ds_version /opt/nvidia/deepstream/deepstream/version   # prints 8.0
# Prints the first word after "Version:" (the file's first line in DS 8.0), or nothing.
_ds_env_ds_version() {
	local file="$1" line
	while IFS= read -r line || [ -n "$line" ]; do
		line="${line%$'\r'}"
		if [[ "$line" =~ ^Version:[[:space:]]*([^[:space:]]+) ]]; then
			printf '%s\n' "${BASH_REMATCH[1]}"
			return 0
		fi
	done < "$file"
	return 0
}

# usage: _ds_env_setup
_ds_env_setup() {
	local root="${DEEPSTREAM_ROOT:-/opt/nvidia/deepstream/deepstream}"
	local cuda_home="${CUDA_HOME:-/usr/local/cuda}"
	local version='' cuda_ver=''

	if [ -d "$root" ]; then
		DS_ROOT="$root"
		export DS_ROOT
		if [ -r "$root/version" ]; then
			version="$(_ds_env_ds_version "$root/version")" || version=''
		fi
		if [ -n "$version" ]; then
			DS_VERSION="$version"
			export DS_VERSION
		else
			_ds_env_warn "no 'Version:' line in $root/version; DS_VERSION not set"
		fi
		_ds_env_path_add LD_LIBRARY_PATH "$root/lib"
		_ds_env_path_add GST_PLUGIN_PATH "$root/lib/gst-plugins"
	else
		_ds_env_warn "DeepStream not found at $root (set DEEPSTREAM_ROOT, or run inside the DeepStream 8.0 image)"
	fi

	if [ -n "${CUDA_VER:-}" ]; then
		# the user's choice wins (e.g. CUDA_VER=12.8 make ...)
		export CUDA_VER
	else
		cuda_ver="$(_ds_env_cuda_version "$cuda_home")" || cuda_ver=''
		if [ -n "$cuda_ver" ]; then
			CUDA_VER="$cuda_ver"
			export CUDA_VER
		else
			_ds_env_warn "CUDA toolkit not found at $cuda_home (no version.json, no nvcc); CUDA_VER not set (set CUDA_HOME or CUDA_VER)"
		fi
	fi
	# USE_NEW_NVSTREAMMUX: deliberately not touched; DeepStream reads it as the user set it.
	return 0
}

if [ "${BASH_SOURCE[0]-}" = "${0-}" ]; then
	printf 'setup_deepstream_env: source this file instead of running it: . %s\n' "$0" >&2
	exit 0
fi

_ds_env_setup || true
unset -f _ds_env_warn _ds_env_path_add _ds_env_cuda_version _ds_env_ds_version _ds_env_setup
return 0

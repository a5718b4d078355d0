#!/usr/bin/env bash
# One entry point for newcomers, CI and users: set-up, tests, the demo and the three roles.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
# What setup installs: everything the tests exercise (pip install .[serve] alone is the small runtime).
EXTRAS=".[train,serve,server,ray,mlflow,dev]"
PY="$VENV/bin/python"

usage() {
    cat <<'USAGE'
usage: ./launch.sh COMMAND [ARGS]

  setup                 create .venv and install the project (idempotent; CPU torch unless a GPU is present)
  demo                  fetch data, train both models on CPU, export, serve with --verify, print a summary
  lint                  ruff check + ruff format --check (also the first step of `test`)
  test [--fast|--slow] [PYTEST_ARGS]
                        setup + lint + the test suite (--fast: only tests that need no corpus and no training;
                        --slow adds the tests marked slow)
  train [--nproc N] [--nnodes N --node-rank R --master-addr A --master-port P]
        [--mixed-precision no|fp16|bf16] -- TRAINER_ARGS
                        python -m trainer train on 1 process, N CPU processes (gloo) or N GPUs (nccl)
  export ARGS           python -m export ARGS
  serve ARGS            python -m serve ARGS

Environment: TORCH_SPEC overrides the torch requirement used by setup (default: torch==2.13.0,
the CPU wheel, when no NVIDIA GPU is visible; plain "torch" with CUDA wheels when one is).
USAGE
}

die() {
    echo "error: $*" >&2
    exit 2
}

have_gpu() {
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'
}

setup() {
    local stamp="$VENV/.seqlstm-installed"
    local want
    want="$(cat pyproject.toml; echo "torch=${TORCH_SPEC:-auto} gpu=$(have_gpu && echo 1 || echo 0)")"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    [[ -x "$PY" ]] || python3 -m venv "$VENV"
    local torch_spec="${TORCH_SPEC:-}"
    if [[ -z "$torch_spec" ]]; then
        # An unpinned `torch` resolves to the CUDA build and several GB of nvidia-* wheels;
        # 2.13.0 is the CPU wheel these machines keep locally. Install it first so that
        # `torch>=2.2` in pyproject.toml is already satisfied and pulls nothing more.
        if have_gpu; then torch_spec="torch"; else torch_spec="torch==2.13.0"; fi
    fi
    echo "setup: installing $torch_spec and the project into $VENV" >&2
    "$PY" -m pip install -q --disable-pip-version-check "$torch_spec" numpy 2>&1 | grep -v '^WARNING: Location' >&2 || true
    "$PY" -c 'import torch' || { echo "setup: torch failed to install ($torch_spec)" >&2; exit 1; }
    "$PY" -m pip install -q --disable-pip-version-check -e "$EXTRAS" 2>&1 | grep -v '^WARNING: Location' >&2 || true
    # The KServe SDK for its v2 REST client only: its own pins would downgrade protobuf, pandas and psutil.
    "$PY" -m pip install -q --disable-pip-version-check --no-deps "kserve==0.21.0" 2>&1 | grep -v '^WARNING: Location' >&2 || true
    "$PY" -c 'import trainer, export, serve, accelerate, onnxruntime, pytest' \
        || { echo "setup: project install failed; rerun with output: $PY -m pip install -e '$EXTRAS'" >&2; exit 1; }
    echo "$want" > "$stamp"
}

lint() {
    # ruff's lint and format checks (config in pyproject.toml); CI runs them through `./launch.sh test`.
    "$PY" -m ruff check --quiet . && "$PY" -m ruff format --check --quiet . \
        || { echo "lint: ruff failed; fix with: $PY -m ruff check --fix . && $PY -m ruff format ." >&2; return 1; }
}

run_tests() {
    local args=()
    case "${1:-}" in
        --slow) shift; args=(-m "") ;;
        --fast) shift; args=(-m "not slow and not corpus and not trains") ;;
    esac
    # pytest-xdist, one worker per core, each test file whole on one worker (so a module's fixtures, the
    # trained models among them, are built once). Not when the caller chooses (-n N, -n 0, -p no:xdist)
    # or debugs (-x, -k, -s, --pdb, --lf, --sw): those run in one process, in order.
    local parallel=(-n auto --dist loadfile) arg
    for arg in "$@"; do
        case "$arg" in
            -n|-n*|--numprocesses*|no:xdist|-pno:xdist|-x|--exitfirst|-k|-k*|-s|--capture=no|--pdb|--lf|--last-failed|--sw|--stepwise)
                parallel=() ;;
        esac
    done
    "$PY" -m pytest "${args[@]}" "${parallel[@]}" "$@"
}

train() {
    local nproc="" nnodes=1 node_rank=0 master_addr=127.0.0.1 master_port="" mp=""
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --nproc|--nnodes|--node-rank|--master-addr|--master-port|--mixed-precision)
                [[ $# -ge 2 && "$2" != --* ]] || die "launch.sh train: $1 needs a value"
                case "$1" in
                    --nproc) nproc="$2" ;;
                    --nnodes) nnodes="$2" ;;
                    --node-rank) node_rank="$2" ;;
                    --master-addr) master_addr="$2" ;;
                    --master-port) master_port="$2" ;;
                    --mixed-precision) mp="$2" ;;
                esac
                shift 2 ;;
            --) shift; break ;;
            *) die "launch.sh train: unknown option '$1' (options before '--': --nproc --nnodes --node-rank --master-addr --master-port --mixed-precision)" ;;
        esac
    done
    case "$mp" in ""|no|fp16|bf16) ;; *) die "launch.sh train: --mixed-precision must be one of no, fp16, bf16; got '$mp'" ;; esac
    if [[ -z "$nproc" ]]; then
        nproc=$("$PY" -c 'import torch; print(max(torch.cuda.device_count(), 1))')
    fi
    [[ "$nproc" =~ ^[1-9][0-9]*$ ]] || die "launch.sh train: --nproc must be a positive integer; got '$nproc'"
    [[ "$nnodes" =~ ^[1-9][0-9]*$ ]] || die "launch.sh train: --nnodes must be a positive integer; got '$nnodes'"
    [[ "$node_rank" =~ ^[0-9]+$ && "$node_rank" -lt "$nnodes" ]] \
        || die "launch.sh train: --node-rank must be 0..$((nnodes - 1)); got '$node_rank'"
    [[ -z "$master_port" || ( "$master_port" =~ ^[0-9]+$ && "$master_port" -ge 1 && "$master_port" -le 65535 ) ]] \
        || die "launch.sh train: --master-port must be 1..65535; got '$master_port'"
    # Accelerator(mixed_precision=None) reads this, so the trainer's own --mixed_precision still wins.
    [[ -n "$mp" ]] && export ACCELERATE_MIXED_PRECISION="$mp"
    if [[ "$nproc" == 1 && "$nnodes" == 1 ]]; then
        exec "$PY" -m trainer train "$@"
    fi
    # torchrun rather than `accelerate launch --cpu`, which silently runs a single process
    # (accelerate issue 2741); Accelerator picks the world up from torchrun's environment.
    if [[ "$nnodes" == 1 && -z "$master_port" ]]; then
        # --standalone picks a free port, so two runs on one machine do not collide on 29500.
        exec "$PY" -m torch.distributed.run --standalone --nproc-per-node "$nproc" -m trainer train "$@"
    fi
    exec "$PY" -m torch.distributed.run --nproc-per-node "$nproc" --nnodes "$nnodes" \
        --node-rank "$node_rank" --master-addr "$master_addr" --master-port "${master_port:-29500}" \
        -m trainer train "$@"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
    setup) setup ;;
    test) setup; lint; run_tests "$@" ;;
    lint) setup; lint ;;
    demo) setup; exec "$PY" -m trainer.demo "$@" ;;
    train) setup; train "$@" ;;
    export) setup; exec "$PY" -m export "$@" ;;
    serve) setup; exec "$PY" -m serve "$@" ;;
    -h|--help|help) usage ;;
    "") usage >&2; exit 2 ;;
    *) die "launch.sh: unknown command '$cmd' (commands: setup demo test lint train export serve)" ;;
esac

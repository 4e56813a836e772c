#!/usr/bin/env bash
# Fails when an instruction-set kernel object (kernels_avx2/avx512/…) carries startup code
# (.init_array or .ctors): that code is compiled for the object's instruction set and runs
# before main on every CPU, a SIGILL on one without it. Arguments: the library's object files.
set -euo pipefail
checked=0
for obj in "$@"; do
  case "$(basename "$obj")" in
    kernels_portable.*) continue ;;
    kernels_*) ;;
    *) continue ;;
  esac
  checked=$((checked + 1))
  if objdump -h "$obj" | grep -E -q '\.(init_array|ctors)'; then
    echo "FAIL: $obj has startup code (a dynamic initializer); make it constexpr" >&2
    objdump -h "$obj" | grep -E '\.(init_array|ctors)' >&2
    exit 1
  fi
done
[ "$checked" -gt 0 ] || { echo "FAIL: no kernel objects among the arguments" >&2; exit 1; }
echo "ok: $checked instruction-set kernel objects carry no startup code"

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
  # readelf reads any ELF machine (the aarch64 cross build's objects too); a file it cannot
  # read fails the test rather than passing it.
  sections=$(readelf -S -W "$obj") || { echo "FAIL: readelf cannot read $obj" >&2; exit 1; }
  # Plain .init_array / .ctors only: sanitizer builds add their module constructors in
  # prioritised sections (.init_array.00099), instrumentation of their own.
  if grep -E -q '\.(init_array|ctors) ' <<<"$sections"; then
    echo "FAIL: $obj has startup code (a dynamic initializer); make it constexpr" >&2
    grep -E '\.(init_array|ctors) ' <<<"$sections" >&2
    exit 1
  fi
done
[ "$checked" -gt 0 ] || { echo "FAIL: no kernel objects among the arguments" >&2; exit 1; }
echo "ok: $checked instruction-set kernel objects carry no startup code"

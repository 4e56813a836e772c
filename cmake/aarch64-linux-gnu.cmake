# Cross-compiles for aarch64 Linux (Jetson AGX Orin / Orin NX) with Debian's cross toolchain
# (g++-aarch64-linux-gnu) and the arm64 multiarch libraries (libabsl-dev:arm64, libgtest-dev:arm64):
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DMOESERVE_ENGINE_ONLY=ON
# Test binaries run under qemu-user (CMAKE_CROSSCOMPILING_EMULATOR), so gtest discovery and
# `ctest` work on an x86_64 host. scripts/cross_aarch64.sh does all of it.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Jetson Orin's CPU is the Cortex-A78AE: Armv8.2-A with FP16 arithmetic and the dot-product
# instructions (-DMOESERVE_AARCH64_MARCH=... for another core). NEON itself is part of the
# Armv8-A baseline.
set(MOESERVE_AARCH64_MARCH "armv8.2-a+fp16+dotprod" CACHE STRING "-march for the aarch64 cross build")
set(MOESERVE_AARCH64_MTUNE "cortex-a78ae" CACHE STRING "-mtune for the aarch64 cross build")
set(CMAKE_C_FLAGS_INIT "-march=${MOESERVE_AARCH64_MARCH} -mtune=${MOESERVE_AARCH64_MTUNE}")
set(CMAKE_CXX_FLAGS_INIT "-march=${MOESERVE_AARCH64_MARCH} -mtune=${MOESERVE_AARCH64_MTUNE}")

# Debian multiarch: target libraries and their CMake configs live in /usr/lib/aarch64-linux-gnu
# (searched first through CMAKE_LIBRARY_ARCHITECTURE; the x86_64 directory never is), the
# cross libc and libstdc++ in /usr/aarch64-linux-gnu.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")

# qemu-user runs the test binaries on an emulated Neoverse-N1, the qemu model with the
# A78AE's instruction set (Armv8.2-A + FP16 + dotprod + RCpc), so an instruction Orin lacks
# faults in CI (-DMOESERVE_QEMU_CPU=max for every feature qemu has). -L makes the loader the
# cross libc's; the libc and libstdc++ the binaries were linked against come first on the
# library path (loader and libc must be the same glibc build); the arm64 multiarch directory
# supplies libabsl.
set(MOESERVE_QEMU_CPU "neoverse-n1" CACHE STRING "qemu-aarch64 -cpu for the unit tests")
find_program(MOESERVE_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(MOESERVE_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR
      "${MOESERVE_QEMU_AARCH64};-cpu;${MOESERVE_QEMU_CPU};-L;/usr/aarch64-linux-gnu;-E;LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib:/usr/lib/aarch64-linux-gnu")
endif()

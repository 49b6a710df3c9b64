#!/bin/sh
# Installs shmpipe's C and C++ API under PREFIX: lib/libshmpipe.so and .a, include/shmpipe.h
# and shmpipe.hpp, lib/pkgconfig/shmpipe.pc, lib/cmake/shmpipe/. Builds the release library
# first, unless SHMPIPE_LIB_DIR names a directory that holds libshmpipe.so and libshmpipe.a.
#
#   sh capi/install.sh /usr/local
set -eu
if [ $# -ne 1 ]; then
  echo "usage: $0 PREFIX" >&2
  exit 2
fi
prefix=$1
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${SHMPIPE_LIB_DIR:-}" ]; then
  cargo build --release -p shmpipe-c --manifest-path "$here/Cargo.toml"
  SHMPIPE_LIB_DIR=${CARGO_TARGET_DIR:-$here/../target}/release
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -n 1)
major=$(echo "$version" | cut -d. -f1)
minor=$(echo "$version" | cut -d. -f2)
# The library's pointer size, from its ELF class (byte 4: 1 is 32-bit, 2 is 64-bit), for the
# CMake version file's check against the project's.
elf_class=$(od -An -tu1 -j4 -N1 "$SHMPIPE_LIB_DIR/libshmpipe.so" | tr -d ' ')
case $elf_class in
  1 | 2) sizeof_void_p=$((elf_class * 4)) ;;
  *) echo "$0: $SHMPIPE_LIB_DIR/libshmpipe.so is not an ELF library" >&2; exit 1 ;;
esac
# What the static library needs besides itself (rustc --print native-static-libs, Linux).
native="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
cmake_native=$(echo "$native" | sed 's/-l//g; s/ /;/g')

install -d "$prefix/lib/pkgconfig" "$prefix/lib/cmake/shmpipe" "$prefix/include"
install -m 755 "$SHMPIPE_LIB_DIR/libshmpipe.so" "$prefix/lib/"
install -m 644 "$SHMPIPE_LIB_DIR/libshmpipe.a" "$prefix/lib/"
install -m 644 "$here/include/shmpipe.h" "$here/include/shmpipe.hpp" "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" -e "s|@NATIVE_STATIC_LIBS@|$native|" \
  "$here/shmpipe.pc.in" > "$prefix/lib/pkgconfig/shmpipe.pc"
sed -e "s|@CMAKE_STATIC_LIBS@|$cmake_native|" \
  "$here/cmake/shmpipeConfig.cmake.in" > "$prefix/lib/cmake/shmpipe/shmpipeConfig.cmake"
sed -e "s|@VERSION@|$version|" -e "s|@MAJOR@|$major|" -e "s|@MINOR@|$minor|" \
  -e "s|@SIZEOF_VOID_P@|$sizeof_void_p|" \
  "$here/cmake/shmpipeConfigVersion.cmake.in" > "$prefix/lib/cmake/shmpipe/shmpipeConfigVersion.cmake"
echo "installed shmpipe $version under $prefix"

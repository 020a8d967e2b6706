# Downstream check of an installed libdsv4: installs the runtime and dev components of BUILD_DIR
# into WORK/prefix, checks the installed files, builds SOURCE_DIR (examples/c-embed) with
# find_package(dsv4) and again with pkg-config, and runs both on MODEL.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(OUT "${out}" PARENT_SCOPE)
  set(ERR "${err}" PARENT_SCOPE)
endfunction()

set(prefix ${WORK}/prefix)
file(REMOVE_RECURSE ${WORK})
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix} --component runtime)
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix} --component dev)

file(GLOB_RECURSE pc ${prefix}/*/dsv4.pc)
file(GLOB_RECURSE cfg ${prefix}/*/dsv4Config.cmake)
file(GLOB_RECURSE so ${prefix}/*/libdsv4.so)
file(GLOB_RECURSE soname ${prefix}/*/libdsv4.so.[0-9])
if(NOT EXISTS ${prefix}/include/dsv4.h OR NOT EXISTS ${prefix}/include/dsv4.hpp OR NOT pc OR NOT cfg OR NOT so
   OR NOT soname)
  file(GLOB_RECURSE all RELATIVE ${prefix} ${prefix}/*)
  message(FATAL_ERROR "incomplete install under ${prefix}: ${all}")
endif()
get_filename_component(libdir ${so} DIRECTORY)
get_filename_component(pcdir ${pc} DIRECTORY)

# 1. CMake package
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK}/build -G ${GENERATOR} -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK}/build)
run(${WORK}/build/c-embed ${MODEL} "Hello" 4)
if(NOT ERR MATCHES "generated [0-9]+ tokens")
  message(FATAL_ERROR "c-embed (find_package build) printed no statistics:\n${ERR}")
endif()

# 2. pkg-config
find_program(PKG_CONFIG pkg-config REQUIRED)
set(ENV{PKG_CONFIG_PATH} ${pcdir})
# A sysroot set for the build's own dependencies (e.g. carried PCRE2 headers) must not re-root the
# freshly installed dsv4.pc: this test reads it as a downstream user would.
unset(ENV{PKG_CONFIG_SYSROOT_DIR})
run(${PKG_CONFIG} --cflags --libs dsv4)
string(STRIP "${OUT}" flags)
separate_arguments(flags UNIX_COMMAND "${flags}")
run(${CC} -std=c99 -Wall -Wextra -pedantic -Werror ${SOURCE_DIR}/main.c ${flags} -o ${WORK}/c-embed-pc)
set(ENV{LD_LIBRARY_PATH} ${libdir})
run(${WORK}/c-embed-pc ${MODEL} "Hello" 4)
if(NOT ERR MATCHES "generated [0-9]+ tokens")
  message(FATAL_ERROR "c-embed (pkg-config build) printed no statistics:\n${ERR}")
endif()
message(STATUS "installed libdsv4 builds and runs c-embed (find_package and pkg-config)")

# llhttp is built from the C sources Debian's node-llhttp package installs.
# They are third-party code: compiled with their own (quieter) flags, never edited.
find_path(LLHTTP_INCLUDE_DIR llhttp.h
    PATHS /usr/share/include/llhttp /usr/include/llhttp /usr/include
    NO_DEFAULT_PATH)
find_path(LLHTTP_SOURCE_DIR llhttp.c PATHS /usr/share/llhttp NO_DEFAULT_PATH)
if(NOT LLHTTP_INCLUDE_DIR OR NOT LLHTTP_SOURCE_DIR)
    message(FATAL_ERROR "llhttp sources not found: install Debian's node-llhttp (make deps)")
endif()
add_library(llhttp STATIC
    ${LLHTTP_SOURCE_DIR}/llhttp.c ${LLHTTP_SOURCE_DIR}/api.c ${LLHTTP_SOURCE_DIR}/http.c)
target_include_directories(llhttp SYSTEM PUBLIC ${LLHTTP_INCLUDE_DIR})
set_target_properties(llhttp PROPERTIES C_STANDARD 11 POSITION_INDEPENDENT_CODE ON)
target_compile_options(llhttp PRIVATE -w)
# Strict parsing: chunk data must end in CRLF exactly (the lenient build takes any two bytes,
# a smuggling gadget behind a front proxy that reads them differently). Public: llhttp.h
# must agree with the sources on this switch.
target_compile_definitions(llhttp PUBLIC LLHTTP_STRICT_MODE=1)

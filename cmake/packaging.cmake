# SPDX-License-Identifier: MIT
# Packages, with CPack: `cpack -G DEB` in a build configured with -DCMAKE_INSTALL_PREFIX=/usr gives three Debian
# packages, one per install component, in Debian's layout (GNUInstallDirs puts the libraries in
# lib/<multiarch> under /usr):
#   libforklog0     runtime: libforklog.so.0 and libforklog.so.0.1.0
#   libforklog-dev  dev: forklog.h and forklog_single.h, libforklog.so, libforklog.a, forklog.pc, the CMake
#                   package, the man pages of section 3
#   forklog-tools   tools: the forklog command and forklog(1)
# The command is a package of its own, as Debian's policy wants for a library package (whose name carries the
# soname, so that two sonames can be installed side by side). tests/deb_check.sh builds, installs, uses and
# removes them. Each package has the license as /usr/share/doc/PACKAGE/copyright (below).
set(CPACK_PACKAGE_NAME forklog)
set(CPACK_PACKAGE_VENDOR "The forklog authors")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
# Each package's Description is its own CPACK_DEBIAN_<COMPONENT>_DESCRIPTION: the first line is its synopsis, the
# rest its extended description, written as plain text (CPack indents each line by one space, puts " ." for an empty
# line, and would keep a line that already starts with a space as a verbatim one). CPack would put a summary set here
# before every package's first line, which then becomes the same synopsis for the three packages, so it is empty.
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "")
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_RESOURCE_FILE_README ${PROJECT_SOURCE_DIR}/README.md)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/" "__pycache__")
set(FORKLOG_DEB_MAINTAINER "The forklog authors <forklog@invalid>" CACHE STRING
    "Maintainer field of the Debian packages (Name <address>)")
set(CPACK_PACKAGE_CONTACT "${FORKLOG_DEB_MAINTAINER}")

set(CPACK_COMPONENTS_ALL runtime dev tools)
set(CPACK_COMPONENT_DEV_DEPENDS runtime)
set(CPACK_COMPONENT_TOOLS_DEPENDS runtime)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# Depends: libc6 and libgcc-s1 (the C personality routine of the library's -fexceptions build) from dpkg-shlibdeps
# (dpkg-dev), and each component's own package at this exact version.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${PROJECT_BINARY_DIR})

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME libforklog0)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)
# A shlibs file for packages built against it, and the ldconfig trigger, so that the loader's cache knows the
# library as soon as the package is installed.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
# Debian wants description lines of at most 80 columns.
set(FORKLOG_DEB_ABOUT "forklog lets many processes append whole records to one log file: each call
appends one record with one write(2) under a robust, process-shared lock, so
records are never torn or interleaved, and a writer killed in the middle of a
record leaves nothing of it behind. No server process, no daemon.")
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION "${PROJECT_DESCRIPTION} (shared library)
${FORKLOG_DEB_ABOUT}

This package holds the shared library.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libforklog-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_DESCRIPTION "${PROJECT_DESCRIPTION} (development files)
${FORKLOG_DEB_ABOUT}

This package holds the header, the single-header form, the static library, the
pkg-config file, the CMake package and the man pages of the functions.")

set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME forklog-tools)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_TOOLS_DESCRIPTION "${PROJECT_DESCRIPTION} (command-line tool)
${FORKLOG_DEB_ABOUT}

This package holds the forklog command, which appends records to a log from the
shell next to the log's other writers.")

# Debian's policy: every package carries its license as /usr/share/doc/PACKAGE/copyright. These files are for the
# packages only: EXCLUDE_FROM_ALL leaves them out of a plain `cmake --install` (which installs the license as
# share/doc/forklog/LICENSE), while cpack installs each component on its own, which includes them.
foreach(component_package IN ITEMS runtime:libforklog0 dev:libforklog-dev tools:forklog-tools)
  string(REPLACE ":" ";" component_package "${component_package}")
  list(GET component_package 0 component)
  list(GET component_package 1 package)
  install(FILES ${PROJECT_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${package}
          RENAME copyright COMPONENT ${component} EXCLUDE_FROM_ALL)
endforeach()

include(CPack)

#ifndef CONCLAVE_CSODIUM_SHIM_H
#define CONCLAVE_CSODIUM_SHIM_H
#include <sodium.h>
#endif

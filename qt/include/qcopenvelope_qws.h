// Qtopia spelling of the header.
#include "qcopenvelope.h"

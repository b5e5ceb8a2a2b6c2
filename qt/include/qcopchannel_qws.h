// Qt 4 (QWS) spelling of the header.
#include "qcopchannel.h"

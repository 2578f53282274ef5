// The launcher's name for the run configuration (train/run_config.h): the launcher loads and
// validates it, train/ runs it.
#pragma once

#include "train/run_config.h"

namespace hydra::launcher {

using Config = train::RunConfig;
using LogConfig = train::LogConfig;

}  // namespace hydra::launcher

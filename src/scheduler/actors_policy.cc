#include "src/scheduler/actors_policy.h"

namespace irfront::scheduler {

std::vector<int64_t> ActorsPolicy::Caps(const NodeView& view, int64_t n) const {
  return EqualCaps(view, n);
}

}  // namespace irfront::scheduler

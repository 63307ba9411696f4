// A binary min-heap of vertices 0..n-1 keyed by int64 with decrease-key (each vertex at
// most once), ties broken by the lower vertex index: deterministic Dijkstra order.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace irfront::scheduler {

class IndexHeap {
 public:
  explicit IndexHeap(int32_t n) : pos_(n, -1), key_(n, 0) {}

  bool empty() const { return heap_.empty(); }
  // Inserts v or lowers its key (the caller only ever lowers it).
  void Push(int32_t v, int64_t key) {
    key_[v] = key;
    if (pos_[v] < 0) {
      pos_[v] = static_cast<int32_t>(heap_.size());
      heap_.push_back(v);
    }
    Up(pos_[v]);
  }
  // Removes and returns the vertex with the least (key, index).
  int32_t Pop() {
    const int32_t top = heap_[0];
    Swap(0, static_cast<int32_t>(heap_.size()) - 1);
    heap_.pop_back();
    pos_[top] = -1;
    if (!heap_.empty()) Down(0);
    return top;
  }
  void Clear() {
    for (int32_t v : heap_) pos_[v] = -1;
    heap_.clear();
  }

 private:
  bool Less(int32_t a, int32_t b) const {
    return key_[a] < key_[b] || (key_[a] == key_[b] && a < b);
  }
  void Swap(int32_t i, int32_t j) {
    std::swap(heap_[i], heap_[j]);
    pos_[heap_[i]] = i;
    pos_[heap_[j]] = j;
  }
  void Up(int32_t i) {
    while (i > 0 && Less(heap_[i], heap_[(i - 1) / 2])) Swap(i, (i - 1) / 2), i = (i - 1) / 2;
  }
  void Down(int32_t i) {
    const int32_t n = static_cast<int32_t>(heap_.size());
    for (;;) {
      int32_t best = i;
      const int32_t l = 2 * i + 1, r = l + 1;
      if (l < n && Less(heap_[l], heap_[best])) best = l;
      if (r < n && Less(heap_[r], heap_[best])) best = r;
      if (best == i) return;
      Swap(i, best);
      i = best;
    }
  }

  std::vector<int32_t> heap_;
  std::vector<int32_t> pos_;
  std::vector<int64_t> key_;
};

}  // namespace irfront::scheduler

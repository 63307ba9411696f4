// Spread policy: balance only.
#include <gtest/gtest.h>

#include <map>

#include "src/scheduler/tests/test_util.h"

namespace irfront::scheduler {
namespace {

using testing::AddNodes;
using testing::In;
using testing::MakeRequest;
using testing::PlainRequest;

class SpreadPolicyTest : public ::testing::Test {
 protected:
  GroupScheduler s_;
};

// Equal nodes: tasks dealt round-robin, counts differ by at most one (lower ids first).
TEST_F(SpreadPolicyTest, RoundRobinOverEqualNodes) {
  AddNodes(&s_, 4, 2.0);
  auto result = s_.Schedule(PlainRequest(1, 10, 0.0), PolicyKind::kSpread);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.nodes(), std::vector<NodeId>({0, 1, 2, 3, 0, 1, 2, 3, 0, 1}));
  EXPECT_EQ(result.task_counts().at(0), 3);
  EXPECT_EQ(result.task_counts().at(3), 2);
}

// Caps follow free CPU: a node with twice the free CPU may take twice the tasks.
TEST_F(SpreadPolicyTest, SharesFollowFreeCpu) {
  s_.AddNode(0, 4.0);
  s_.AddNode(1, 2.0);
  auto result = s_.Schedule(PlainRequest(1, 6, 0.0), PolicyKind::kSpread);
  EXPECT_EQ(result.task_counts().at(0), 4);
  EXPECT_EQ(result.task_counts().at(1), 2);
}

// Caps are upper bounds, dealt round-robin in id order: free CPU 1 and 3 with 4 tasks
// give caps 1 and 3 (node 0 full after one task); free CPU 2 and 1 with 4 tasks give
// caps ceil(8/3) = 3 and ceil(4/3) = 2, and round-robin stops at 2 + 2.
TEST_F(SpreadPolicyTest, RoundRobinUpToCaps) {
  s_.AddNode(0, 1.0);
  s_.AddNode(1, 3.0);
  auto result = s_.Schedule(PlainRequest(1, 4, 1.0), PolicyKind::kSpread);
  EXPECT_EQ(result.nodes(), std::vector<NodeId>({0, 1, 1, 1}));
  GroupScheduler other;
  other.AddNode(0, 2.0);
  other.AddNode(1, 1.0);
  result = other.Schedule(PlainRequest(1, 4, 1.0), PolicyKind::kSpread);
  EXPECT_EQ(result.task_counts(), (std::map<NodeId, int64_t>{{0, 2}, {1, 2}}));
}

// Data is ignored: all inputs on node 0 still spread over both nodes.
TEST_F(SpreadPolicyTest, IgnoresData) {
  AddNodes(&s_, 2, 2.0);
  auto result = s_.Schedule(MakeRequest(1, {{In{100, {0}}}, {In{100, {0}}}}, 0.0),
                            PolicyKind::kSpread);
  EXPECT_EQ(result.nodes(), std::vector<NodeId>({0, 1}));
  EXPECT_EQ(result.bytes_moved(), 100);
}

// Dead nodes get nothing.
TEST_F(SpreadPolicyTest, SkipsDeadNodes) {
  AddNodes(&s_, 3, 2.0);
  s_.UpdateNode(1, 2.0, /*alive=*/false);
  auto result = s_.Schedule(PlainRequest(1, 4, 1.0), PolicyKind::kSpread);
  EXPECT_EQ(result.nodes(), std::vector<NodeId>({0, 2, 0, 2}));
}

}  // namespace
}  // namespace irfront::scheduler

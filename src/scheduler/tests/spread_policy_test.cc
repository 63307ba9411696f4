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

// Shares follow free CPU: a node with twice the free CPU gets twice the tasks.
TEST_F(SpreadPolicyTest, SharesFollowFreeCpu) {
  s_.AddNode(0, 4.0);
  s_.AddNode(1, 2.0);
  auto result = s_.Schedule(PlainRequest(1, 6, 0.0), PolicyKind::kSpread);
  EXPECT_EQ(result.task_counts().at(0), 4);
  EXPECT_EQ(result.task_counts().at(1), 2);
}

// Equal remainders tie exactly and go to the lower id: free CPU 1,1,1,1,1,7 and 2 tasks
// give quotas 1/6 (x5) and 7/6; node 5 gets 1, the last task goes to node 0.
TEST_F(SpreadPolicyTest, RemainderTiesGoToLowerId) {
  for (double cpus : {1.0, 1.0, 1.0, 1.0, 1.0, 7.0}) {
    s_.AddNode(static_cast<NodeId>(s_.state().nodes().size()), cpus);
  }
  auto result = s_.Schedule(PlainRequest(1, 2, 1.0), PolicyKind::kSpread);
  EXPECT_EQ(result.task_counts(), (std::map<NodeId, int64_t>{{0, 1}, {5, 1}}));
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

// Actors policy: balanced by count, placed with the data they read.
#include <gtest/gtest.h>

#include "src/scheduler/tests/test_util.h"

namespace irfront::scheduler {
namespace {

using testing::In;
using testing::MakeRequest;
using testing::PlainRequest;

class ActorsPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    s_.AddNode(0, 8.0);
    s_.AddNode(1, 2.0);
  }
  GroupScheduler s_;
};

// Equal counts per node whatever the CPU capacity (actors are 0-CPU and long-lived).
TEST_F(ActorsPolicyTest, BalancedByCount) {
  auto result = s_.Schedule(PlainRequest(1, 4, 0.0), PolicyKind::kActors);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.task_counts().at(0), 2);
  EXPECT_EQ(result.task_counts().at(1), 2);
}

// Each actor goes where most of the bytes it reads are, within the balance.
TEST_F(ActorsPolicyTest, PlacedWithTheirData) {
  // Producer group 1: two tasks, one per node (equal counts).
  ASSERT_EQ(s_.Schedule(PlainRequest(1, 2, 0.0), PolicyKind::kActors).nodes(),
            std::vector<NodeId>({0, 1}));
  // Actor 0 reads 10 bytes from task 0 and 90 from task 1; actor 1 the opposite.
  auto request = MakeRequest(2, {{In{10, {}, 1, 0}, In{90, {}, 1, 1}},
                                 {In{90, {}, 1, 0}, In{10, {}, 1, 1}}}, 0.0);
  auto result = s_.Schedule(request, PolicyKind::kActors);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.nodes(), std::vector<NodeId>({1, 0}));
  EXPECT_EQ(result.bytes_moved(), 20);
}

}  // namespace
}  // namespace irfront::scheduler

// GroupScheduler boundary checks: each bad call throws std::invalid_argument with a
// helpful message and leaves the state unchanged; a valid call works afterwards.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "src/scheduler/tests/test_util.h"

namespace irfront::scheduler {
namespace {

using testing::AddNodes;
using testing::In;
using testing::MakeRequest;
using testing::PlainRequest;

class ValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AddNodes(&s_, 2, 2.0);
    ASSERT_TRUE(s_.Schedule(PlainRequest(1, 2), PolicyKind::kLocality).ok());
  }
  // Expects `request` to throw with `fragment` in the message, then checks the state.
  void ExpectRejected(const GroupRequest& request, const std::string& fragment) {
    try {
      s_.Schedule(request, PolicyKind::kLocality);
      ADD_FAILURE() << "no exception; expected one mentioning: " << fragment;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
    ExpectUnchangedAndUsable();
  }
  void ExpectUnchangedAndUsable() {
    EXPECT_EQ(s_.state().group_count(), 1u);
    EXPECT_EQ(s_.state().nodes().size(), 2u);
    EXPECT_DOUBLE_EQ(s_.state().Load(0) + s_.state().Load(1), 2.0);
    EXPECT_TRUE(s_.Schedule(PlainRequest(9, 1), PolicyKind::kSpread).ok());
    s_.FreeGroup(9);
  }
  GroupScheduler s_;
};

// Offsets with the wrong length: the message gives the expected form.
TEST_F(ValidationTest, InputOffsetsLength) {
  auto r = PlainRequest(2, 3);
  r.input_offsets = {0, 0, 0, 0, 0};
  ExpectRejected(r, "input_offsets has 5 entries for 3 tasks; expected 4 (tasks + 1)");
}

// Offsets that go down.
TEST_F(ValidationTest, OffsetsNotMonotone) {
  auto r = MakeRequest(2, {{In{1, {0}}, In{1, {0}}}, {}});
  r.input_offsets = {0, 2, 1};
  ExpectRejected(r, "non-decreasing");
}

// Offsets that do not end at the number of inputs.
TEST_F(ValidationTest, OffsetsOutOfRange) {
  auto r = MakeRequest(2, {{In{1, {0}}}});
  r.location_offsets = {0, 5};
  ExpectRejected(r, "must end at the length of location_nodes");
}

// Negative, NaN and infinite CPU demands.
TEST_F(ValidationTest, BadTaskCpus) {
  for (double bad : {-1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    ExpectRejected(PlainRequest(2, 1, bad), "task_cpus[0]");
  }
}

// Negative bytes.
TEST_F(ValidationTest, NegativeBytes) {
  ExpectRejected(MakeRequest(2, {{In{-5, {0}}}}), "input_bytes[0] = -5");
}

// A location naming a node the cluster does not have.
TEST_F(ValidationTest, UnknownLocationNode) {
  ExpectRejected(MakeRequest(2, {{In{5, {42}}}}), "location_nodes[0] = 42 is not a node");
}

// Producer arrays of the wrong length.
TEST_F(ValidationTest, ProducerArraysLength) {
  auto r = MakeRequest(2, {{In{5, {0}}}});
  r.input_producer_task.clear();
  ExpectRejected(r, "input_producer_group and input_producer_task");
}

// Negative group ids.
TEST_F(ValidationTest, NegativeGroupIds) {
  ExpectRejected(PlainRequest(-3, 1), "group_id must be >= 0");
  ExpectRejected(PlainRequest(2, 1, 1.0, /*depends_on=*/-7), "depends_on");
}

// An unknown dependency is allowed (treated as none).
TEST_F(ValidationTest, UnknownDependencyAllowed) {
  EXPECT_TRUE(s_.Schedule(PlainRequest(2, 2, 1.0, /*depends_on=*/77), PolicyKind::kPack).ok());
}

// Node membership errors.
TEST_F(ValidationTest, NodeMembership) {
  EXPECT_THROW(s_.AddNode(0, 1.0), std::invalid_argument);
  EXPECT_THROW(s_.AddNode(5, -1.0), std::invalid_argument);
  EXPECT_THROW(s_.AddNode(5, std::nan("")), std::invalid_argument);
  EXPECT_THROW(s_.UpdateNode(5, 1.0, true), std::invalid_argument);
  EXPECT_THROW(s_.UpdateNode(0, std::numeric_limits<double>::infinity(), true),
               std::invalid_argument);
  EXPECT_THROW(s_.RemoveNode(5), std::invalid_argument);
  ExpectUnchangedAndUsable();
}

// No node at all is a usage error, with a message that says how to fix it.
// A cached plan recorded without a policy: its load counts like a placed group's, and a
// plan naming a dead or unknown node, or of the wrong size, is refused unchanged.
TEST_F(ValidationTest, RecordPlacement) {
  s_.RecordPlacement(5, {1, 1, 0}, {1.0, 1.0, 0.5});
  EXPECT_EQ(s_.state().group_count(), 2u);
  EXPECT_DOUBLE_EQ(s_.state().Load(0) + s_.state().Load(1), 4.5);
  ASSERT_NE(s_.state().GroupNodes(5), nullptr);
  EXPECT_EQ(*s_.state().GroupNodes(5), (std::vector<NodeId>{1, 1, 0}));
  s_.FreeGroup(5);
  auto rejected = [&](const std::vector<NodeId>& nodes, const std::vector<double>& cpus,
                      const std::string& fragment) {
    try {
      s_.RecordPlacement(6, nodes, cpus);
      ADD_FAILURE() << "no exception; expected one mentioning: " << fragment;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
    ExpectUnchangedAndUsable();
  };
  rejected({0, 1}, {1.0}, "2 nodes for 1 tasks");
  rejected({0, 7}, {1.0, 1.0}, "node 7 is unknown");
  rejected({0}, {-1.0}, "RecordPlacement");
  s_.UpdateNode(1, 2.0, false);
  rejected({1}, {1.0}, "node 1 is dead");
  s_.UpdateNode(1, 2.0, true);
}

TEST(ValidationEmptyTest, EmptyCluster) {
  GroupScheduler s;
  try {
    s.Schedule(PlainRequest(1, 1), PolicyKind::kLocality);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("empty cluster: add nodes with add_node"),
              std::string::npos);
  }
}

// Nodes that are all dead are a cluster state: every policy says infeasible, records
// nothing, and places again once a node is alive.
TEST(ValidationEmptyTest, NoAliveNodeIsInfeasible) {
  for (PolicyKind policy : {PolicyKind::kPack, PolicyKind::kLocality, PolicyKind::kSpread,
                            PolicyKind::kActors}) {
    GroupScheduler s;
    s.AddNode(0, 1.0);
    s.UpdateNode(0, 1.0, /*alive=*/false);
    const SchedulingResult result = s.Schedule(PlainRequest(1, 2), policy);
    EXPECT_FALSE(result.ok());
    EXPECT_NE(result.reason().find("no alive node"), std::string::npos) << result.reason();
    EXPECT_EQ(s.state().group_count(), 0u);
    s.UpdateNode(0, 1.0, /*alive=*/true);
    EXPECT_TRUE(s.Schedule(PlainRequest(1, 2), policy).ok());
  }
}

}  // namespace
}  // namespace irfront::scheduler

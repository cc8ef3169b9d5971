// Package federation holds the hub side of meshfed: clusters (the registry of member
// clusters and their health), mcs (the pure MCS aggregation), and the sync that writes the
// result into every member. Nothing here runs in a member's data path.
package federation

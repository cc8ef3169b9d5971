// Package repo holds checks of the repository itself, such as that no credential is
// committed.
package repo

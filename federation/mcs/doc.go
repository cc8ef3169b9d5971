// Package mcs holds the pure logic of the Multi-Cluster Services API (KEP-1645) as meshfed
// applies it: which exports are valid, how the exports of one service in several clusters
// aggregate into one ServiceImport, how conflicts between them resolve (the oldest export
// wins), and which EndpointSlices each member gets for the endpoints of the others.
//
// Everything here is a function of its arguments: no clients, no clocks, no I/O. The hub's
// controller reads the clusters, calls these functions and writes the result. Arguments may
// be shared cache objects: nothing here modifies them, and results share no memory with them.
package mcs

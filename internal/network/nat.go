package network

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// TableName is the nftables table (family ip) that holds every rule Vessel
// installs on a host; nothing else writes to it and nothing in it belongs to
// anyone else.
const TableName = "vessel"

const natChain = "postrouting"

var (
	vesselTable = &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
	postrouting = &nftables.Chain{
		Name:     natChain,
		Table:    vesselTable,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	}
)

// ruleComment identifies a subnet's masquerade rule and records its CIDR so
// a changed CIDR is detected and the rule replaced.
func ruleComment(subnet string, cidr netip.Prefix) string {
	return "vessel-subnet=" + subnet + " cidr=" + cidr.String()
}

func subnetOfComment(c string) (string, bool) {
	rest, ok := strings.CutPrefix(c, "vessel-subnet=")
	if !ok {
		return "", false
	}
	name, _, _ := strings.Cut(rest, " ")
	return name, true
}

// masqueradeExprs is `ip saddr CIDR ip daddr != CIDR masquerade`: traffic
// between sandboxes of one subnet keeps its source address, everything that
// leaves the subnet takes the host's.
func masqueradeExprs(cidr netip.Prefix) []expr.Any {
	mask := net.CIDRMask(cidr.Bits(), 32)
	network := cidr.Masked().Addr().AsSlice()
	match := func(offset uint32, op expr.CmpOp) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
			&expr.Cmp{Op: op, Register: 1, Data: network},
		}
	}
	const saddr, daddr = 12, 16
	e := match(saddr, expr.CmpOpEq)
	e = append(e, match(daddr, expr.CmpOpNeq)...)
	return append(e, &expr.Masq{})
}

func ensureMasquerade(subnet string, cidr netip.Prefix) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	c.AddTable(vesselTable)
	c.AddChain(postrouting)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: create table %s: %w", TableName, err)
	}
	rules, err := c.GetRules(vesselTable, postrouting)
	if err != nil {
		return fmt.Errorf("nftables: list rules: %w", err)
	}
	want := ruleComment(subnet, cidr)
	present := false
	for _, r := range rules {
		comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		if name, ok := subnetOfComment(comment); !ok || name != subnet {
			continue
		}
		if comment == want && !present {
			present = true
			continue
		}
		if err := c.DelRule(r); err != nil {
			return fmt.Errorf("nftables: delete stale rule of subnet %s: %w", subnet, err)
		}
	}
	if !present {
		c.AddRule(&nftables.Rule{
			Table:    vesselTable,
			Chain:    postrouting,
			Exprs:    masqueradeExprs(cidr),
			UserData: userdata.AppendString(nil, userdata.TypeComment, want),
		})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: masquerade for %s: %w", cidr, err)
	}
	return nil
}

func removeMasquerade(subnet string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if _, err := c.ListTableOfFamily(TableName, nftables.TableFamilyIPv4); err != nil {
		return nil // no table, no rule
	}
	rules, err := c.GetRules(vesselTable, postrouting)
	if err != nil {
		return nil // table without our chain: nothing of this subnet's
	}
	for _, r := range rules {
		comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		if name, ok := subnetOfComment(comment); ok && name == subnet {
			if err := c.DelRule(r); err != nil {
				return fmt.Errorf("nftables: delete rule of subnet %s: %w", subnet, err)
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: remove masquerade of %s: %w", subnet, err)
	}
	return nil
}

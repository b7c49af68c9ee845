-- TPC-H Q6, written for Tarn from the TPC-H specification (validation parameters,
-- date arithmetic pre-computed so that every engine reads the same text).
select sum(l_extendedprice * l_discount) as revenue
from lineitem
where l_shipdate >= date '1994-01-01' and l_shipdate < date '1995-01-01'
    and l_discount between 0.05 and 0.07 and l_quantity < 24

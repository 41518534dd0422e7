<resource schema="spherex" resdir="spherex">
  <meta name="title">SPHEREx stand-in (IRSA-like CAOM plane/artifact)</meta>
  <meta name="description">Simulated SPHEREx L2 metadata for offline tests of the ADQL that
    IRSA accepts; column names follow IRSA's spherex.plane and spherex.artifact.</meta>
  <meta name="creationDate">2026-11-21T00:00:00</meta>
  <meta name="subject">Surveys</meta>
  <meta name="creator.name">spxdask test fixture</meta>

  <table id="plane" onDisk="True" adql="True">
    <meta name="description">One row per calibrated image (exposure x detector).</meta>
    <primary>planeid</primary>
    <index columns="poly" method="GIST"/>
    <column name="planeid" type="bigint" required="True" description="Plane identifier"/>
    <column name="obsid" type="text" description="Observation UUID"/>
    <column name="obs_publisher_did" type="text" description="Publisher dataset identifier"/>
    <column name="poly" type="spoly" unit="deg" description="Footprint polygon (ICRS)"/>
    <column name="time_bounds_lower" type="double precision" unit="d" description="Exposure start (MJD)"/>
    <column name="time_bounds_upper" type="double precision" unit="d" description="Exposure end (MJD)"/>
    <column name="energy_bounds_lower" type="double precision" unit="m" description="Shortest wavelength"/>
    <column name="energy_bounds_upper" type="double precision" unit="m" description="Longest wavelength"/>
    <column name="energy_bandpassname" type="text" description="Detector, e.g. SPHEREx-D3"/>
    <column name="provenance_version" type="text" description="Pipeline version"/>
  </table>

  <table id="artifact" onDisk="True" adql="True">
    <meta name="description">Files belonging to a plane.</meta>
    <column name="planeid" type="bigint" required="True" description="Plane of this artifact"/>
    <column name="uri" type="text" description="Relative file location"/>
    <column name="contentlength" type="bigint" unit="byte" required="True" description="File size"/>
    <column name="contentchecksum" type="text" description="MD5 checksum"/>
    <column name="producttype" type="text" description="science"/>
  </table>

  <data id="import_plane">
    <sources pattern="data/plane.csv"/>
    <csvGrammar/>
    <make table="plane">
      <rowmaker idmaps="*">
        <map key="poly">pgsphere.SPoly.fromDALI([float(x) for x in @poly_dali.split()])</map>
      </rowmaker>
    </make>
  </data>

  <data id="import_artifact">
    <sources pattern="data/artifact.csv"/>
    <csvGrammar/>
    <make table="artifact">
      <rowmaker idmaps="*"/>
    </make>
  </data>
</resource>
